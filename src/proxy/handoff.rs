//! The data plane's side of an upgrade's connection hand-off
//! (`crate::upgrade` carries the connections across): a passthrough relay
//! that pauses when the hand-off begins, offers its sockets and the bytes
//! in flight ([`Moved`]), and either ends (the new process acknowledged
//! it) or resumes relaying (it did not); and the new process's side,
//! [`adopt`], which relays a moved connection on under its route.
//!
//! Ownership is never in doubt: an offered connection stays this
//! process's until the answer comes, and an [`Offer`] dropped unanswered
//! (a hand-off thread that ended, a channel closed) gives it back, so a
//! failure anywhere leaves every connection with exactly one owner
//! (`moved.rs`: the types, apart so that `Shared` can hold a [`Handoff`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;

use super::conn_log::{access_log, ConnLog};
use super::limits::ClientSlot;
pub use super::moved::{Handoff, Moved, Offer};
use super::outcome::Outcome;
use super::relay::{self, Carry, Counters, RelayEnd};
use super::workers::Workers;
use super::Shared;
use crate::routing::table::OpenGuard;
use crate::routing::RouteEntry;

/// Resolves when the hand-off begins, or never (`armed` false: this
/// connection was offered once and not taken).
async fn pause_signal(handoff: &Handoff, armed: bool) {
    if armed {
        handoff.begun().await
    } else {
        std::future::pending().await
    }
}

/// A connected passthrough connection and what it holds while it lives.
pub struct Relayed<'a> {
    pub client: TcpStream,
    pub upstream: TcpStream,
    /// Counted among its route's open connections; the route's entry.
    pub open: OpenGuard,
    /// Its slot under the per-client limit (none for one adopted from the
    /// previous process).
    pub per_client: Option<ClientSlot<'a>>,
}

/// Relays a connection (starting with `carry`) until it ends, or hands it
/// off when an upgrade asks. `log`'s bytes start from what was relayed
/// before (`log.bytes_up`, `log.bytes_down`). `carry` is boxed: only a
/// connection adopted from the previous process has one, and this future
/// holds it for the connection's whole life.
///
/// A function returning an `async` block, so that the connection is held
/// once (an `async fn` keeps each argument twice): this state is most of
/// what an idle passthrough connection costs.
#[allow(clippy::manual_async_fn)]
pub fn relay<'a>(
    shared: &'a Shared,
    mut conn: Relayed<'a>,
    log: &'a mut ConnLog,
    mut carry: Option<Box<Carry>>,
) -> impl std::future::Future<Output = Outcome> + Send + 'a {
    async move {
        // Counting on from what was relayed before.
        let counters = Counters::starting_at(log.bytes_up, log.bytes_down);
        let mut armed = true;
        let end = loop {
            let entry = conn.open.entry();
            let end = relay::relay_pausable(
                &mut conn.client,
                &mut conn.upstream,
                shared.config.timeouts.idle,
                shared.stop_signal(entry),
                pause_signal(&shared.handoff, armed),
                &counters,
                shared.config.splice,
                carry.take().map(|c| *c).unwrap_or_default(),
            )
            .await;
            log.bytes_up = counters.up.load(std::sync::atomic::Ordering::Relaxed);
            log.bytes_down = counters.down.load(std::sync::atomic::Ordering::Relaxed);
            let RelayEnd::Paused(c) = end else { break end };
            let Relayed {
                client,
                upstream,
                open,
                per_client,
            } = conn;
            let moved = match into_moved(client, upstream, open.entry(), log, *c).map(Box::new) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot hand off a connection: closing it");
                    return Outcome::Shutdown;
                }
            };
            // Boxed: an offer's state is held only while it waits.
            match Box::pin(shared.handoff.offer(moved)).await {
                Ok(()) => return Outcome::HandedOff,
                Err(back) => {
                    tracing::debug!("connection not taken by the new process: relaying it on");
                    let (client, upstream, c) = match from_moved(back) {
                        Ok(ok) => ok,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot resume a connection");
                            return Outcome::Shutdown;
                        }
                    };
                    carry = Some(Box::new(c));
                    conn = Relayed {
                        client,
                        upstream,
                        open,
                        per_client,
                    };
                    armed = false;
                }
            }
        };
        shared.after_relay(&end, &conn.open.entry().route)
    }
}

fn into_moved(
    client: TcpStream,
    upstream: TcpStream,
    entry: &RouteEntry,
    log: &ConnLog,
    carry: Carry,
) -> std::io::Result<Moved> {
    Ok(Moved {
        client: client.into_std()?,
        upstream: upstream.into_std()?,
        route: entry.route.name.clone(),
        peer: log.client,
        local: log.local,
        sni: log.sni.clone(),
        bytes_up: log.bytes_up,
        bytes_down: log.bytes_down,
        carry,
    })
}

/// Back from an offer not taken: registered with this runtime again.
fn from_moved(m: Moved) -> std::io::Result<(TcpStream, TcpStream, Carry)> {
    Ok((
        TcpStream::from_std(m.client)?,
        TcpStream::from_std(m.upstream)?,
        m.carry,
    ))
}

/// The new process takes a moved connection: found again by its route's
/// name in the live table (so expiry and removal close it as any other),
/// under a connection permit, counted and logged where it ends. Refused
/// (with the reason), its descriptors close here and the old process,
/// which keeps its own, relays it on.
pub fn adopt(
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    workers: &Workers,
    moved: Moved,
) -> Result<(), String> {
    let entry = shared.router.load().get(&moved.route).cloned();
    let Some(entry) = entry else {
        let why = format!("no route `{}` here", moved.route);
        return Err(why);
    };
    if entry.route.expired_at(chrono::Utc::now()) {
        let why = format!("route `{}` has expired", moved.route);
        return Err(why);
    }
    let Ok(permit) = Arc::clone(&shared.limit).try_acquire_owned() else {
        return Err("limits.max_connections reached".into());
    };
    let mut log = ConnLog::new(moved.peer, moved.local);
    log.sni = moved.sni.clone();
    log.entry = Some(Arc::clone(&entry));
    log.bytes_up = moved.bytes_up;
    log.bytes_down = moved.bytes_down;
    // Registered with the worker it will run on.
    let rt = workers.next();
    let registered = {
        let _in_worker = rt.enter();
        TcpStream::from_std(moved.client)
            .and_then(|c| Ok((c, TcpStream::from_std(moved.upstream)?)))
    };
    let (client, upstream) = match registered {
        Ok(s) => s,
        Err(e) => return Err(format!("cannot register its sockets: {e}")),
    };
    let (before_up, before_down) = (moved.bytes_up, moved.bytes_down);
    let carry = moved.carry;
    let shared = Arc::clone(shared);
    let task = async move {
        let _permit = permit;
        let start = tokio::time::Instant::now();
        let conn = Relayed {
            client,
            upstream,
            open: entry.track(),
            per_client: None,
        };
        let outcome = relay(&shared, conn, &mut log, Some(Box::new(carry))).await;
        let took: Duration = start.elapsed();
        // Bytes relayed here: before the move they were counted there.
        entry.metrics(&shared.metrics).finished(
            &shared.metrics,
            outcome,
            log.bytes_up - before_up,
            log.bytes_down - before_down,
            took,
        );
        access_log(&shared, outcome, &log, took);
    };
    tracker.spawn_on(task, rt);
    Ok(())
}
