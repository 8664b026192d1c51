//! Supervision of the reconciler task. Every route change, and expiry,
//! goes through that one task; if it ends (a panic, a return) or stops
//! answering, the proxy keeps serving a table that no longer changes and
//! no longer expires anything. Nothing inside the process can repair that,
//! so the watchdog says so: `/healthz` fails and the process exits
//! non-zero, for its supervisor to restart it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Control;

/// How often the reconciler is pinged (and how long one ping may take);
/// `reload.stall_timeout` is at least this.
pub const PING_EVERY: Duration = Duration::from_secs(1);

/// What `/healthz` and the process's main loop read: healthy, or why not.
#[derive(Clone, Debug)]
pub struct Health(watch::Receiver<Option<Arc<str>>>);

impl Health {
    /// Why the control plane failed, if it has.
    pub fn failure(&self) -> Option<Arc<str>> {
        self.0.borrow().clone()
    }

    /// Waits until the control plane fails; returns why. Pending forever
    /// while it is healthy, and after the watchdog stopped for shutdown.
    pub async fn failed(&self) -> Arc<str> {
        let mut rx = self.0.clone();
        match rx.wait_for(Option::is_some).await.map(|w| w.clone()) {
            Ok(Some(why)) => why,
            _ => std::future::pending().await,
        }
    }
}

/// Watches `task` (the running reconciler, reached through `control`):
/// failed as soon as the task ends, or once it has answered no ping for
/// `stall`. Stops, healthy, when `stop` is cancelled.
pub fn supervise(
    task: JoinHandle<()>,
    control: Control,
    stall: Duration,
    stop: CancellationToken,
) -> Health {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let why = watch_task(task, control, stall, stop).await;
        if let Some(why) = why {
            tracing::error!(reason = %why, "the route reconciler failed: /healthz fails and the process exits");
            // The value outlives the sender: readers still see it.
            let _ = tx.send(Some(why.into()));
        }
    });
    Health(rx)
}

/// The watch loop; `Some(why)` when the reconciler failed.
async fn watch_task(
    mut task: JoinHandle<()>,
    control: Control,
    stall: Duration,
    stop: CancellationToken,
) -> Option<String> {
    let mut answered_at = Instant::now();
    loop {
        let round = async {
            let answered = matches!(
                tokio::time::timeout(PING_EVERY, control.ping()).await,
                Ok(Ok(()))
            );
            if answered {
                tokio::time::sleep(PING_EVERY).await;
            }
            answered
        };
        tokio::select! {
            // An ended task first: its pings fail at once.
            biased;
            r = &mut task => return Some(ended(r)),
            () = stop.cancelled() => return None,
            answered = round => {
                if answered {
                    answered_at = Instant::now();
                } else if answered_at.elapsed() >= stall {
                    return Some(format!(
                        "the reconciler has answered no ping for {}",
                        humantime::format_duration(stall)
                    ));
                }
            }
        }
    }
}

fn ended(r: Result<(), JoinError>) -> String {
    match r {
        Ok(()) => "the reconciler task returned".into(),
        Err(e) if e.is_panic() => "the reconciler task panicked".into(),
        Err(_) => "the reconciler task was cancelled".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::api::Command;
    use crate::control::ReconcilerStats;
    use arc_swap::ArcSwap;
    use tokio::sync::mpsc;

    /// A control whose commands arrive on the returned receiver.
    fn control() -> (Control, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(4);
        let c = Control::new(
            tx,
            Default::default(),
            Arc::new(ReconcilerStats::default()),
            Arc::new(ArcSwap::from_pointee(Default::default())),
        );
        (c, rx)
    }

    /// Answers pings until `n` have come, then returns.
    async fn answer(mut rx: mpsc::Receiver<Command>, n: usize) {
        for _ in 0..n {
            match rx.recv().await {
                Some(Command::Ping(reply)) => {
                    let _ = reply.send(());
                }
                _ => return,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_ended_task_fails_at_once_and_a_live_one_stays_healthy() {
        let (c, rx) = control();
        let task = tokio::spawn(answer(rx, 30));
        let health = supervise(task, c, Duration::from_secs(10), CancellationToken::new());
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert_eq!(
            health.failure(),
            None,
            "answering pings for 25 s is healthy"
        );
        let why = tokio::time::timeout(Duration::from_secs(30), health.failed())
            .await
            .expect("the task's end is seen");
        assert_eq!(&*why, "the reconciler task returned");
        assert_eq!(
            health.failure().as_deref(),
            Some("the reconciler task returned")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_stops_answering_fails_after_the_stall_timeout() {
        let (c, rx) = control();
        // Alive (the task runs) but never reads a command again.
        let task = tokio::spawn(async move {
            let _rx = rx;
            std::future::pending::<()>().await
        });
        let start = Instant::now();
        let health = supervise(task, c, Duration::from_secs(10), CancellationToken::new());
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert_eq!(health.failure(), None, "not before the stall timeout");
        let why = health.failed().await;
        assert!(start.elapsed() >= Duration::from_secs(10));
        assert!(
            start.elapsed() < Duration::from_secs(13),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(&*why, "the reconciler has answered no ping for 10s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_watchdog_never_reports_a_failure() {
        let (c, rx) = control();
        let task = tokio::spawn(answer(rx, 1));
        let stop = CancellationToken::new();
        stop.cancel();
        let health = supervise(task, c, Duration::from_secs(10), stop);
        let r = tokio::time::timeout(Duration::from_secs(60), health.failed()).await;
        assert!(r.is_err(), "stopped for shutdown: no failure");
    }
}
