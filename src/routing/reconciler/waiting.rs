//! Waiting for work the reconciler hands to a blocking thread (reading the
//! routes file and certificates) without going deaf. A big routes file can
//! take seconds to read and validate; meanwhile the task still answers the
//! watchdog's pings (it is waiting, not stuck) and still expires routes on
//! time, and every other command waits its turn, in order. A read that
//! never ends (a stuck file system) is given up after a bound.

use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{sleep_until_opt, Command, Reconciler};
use crate::routing::reload;

/// Commands taken off the queue while waiting, at most: past it the queue
/// itself holds the senders back, as it does when the task is busy.
const DEFERRED_MAX: usize = 64;

impl Reconciler {
    /// When the next route or app expiry is due, as a timer instant (just
    /// after it, never just before).
    pub(super) fn next_expiry_wake(&self) -> Option<Instant> {
        // Apps count too: one without a route (stopped) is still
        // forgotten at its expiry.
        let next = reload::next_expiry(&self.shared.router.load());
        next.into_iter()
            .chain(self.apps.next_expiry())
            .min()
            .map(|t| {
                let left = (t - Utc::now()).to_std().unwrap_or_default();
                Instant::now() + left + Duration::from_millis(1)
            })
    }

    /// The result of `work`, answering pings and expiring routes until it
    /// is done; other commands are kept, in order, for after. `Err` if it
    /// failed or took longer than `bound`.
    pub(super) async fn off_task<T>(
        &mut self,
        mut work: JoinHandle<T>,
        bound: Duration,
    ) -> Result<T, String> {
        let deadline = Instant::now() + bound;
        let mut closed = false;
        loop {
            let expiry = self.next_expiry_wake();
            let room = !closed && self.deferred.len() < DEFERRED_MAX;
            tokio::select! {
                r = &mut work => return r.map_err(|e| e.to_string()),
                () = tokio::time::sleep_until(deadline) => {
                    return Err(format!("took over {}", humantime::format_duration(bound)));
                }
                () = sleep_until_opt(expiry) => self.expire().await,
                cmd = self.rx.recv(), if room => match cmd {
                    Some(Command::Ping(reply)) => {
                        let _ = reply.send(());
                    }
                    Some(other) => self.deferred.push_back(other),
                    None => closed = true,
                },
            }
        }
    }
}
