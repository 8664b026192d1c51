//! The data plane's threads. Each worker is one OS thread running a
//! current-thread tokio runtime, and it has its own listening socket on
//! every address (`SO_REUSEPORT`, see [`super::listener::bind_group`]): the
//! kernel spreads new connections over the workers' accept queues, and a
//! connection lives on the worker that accepted it, from its first byte to
//! its close.
//!
//! Why not one work-stealing runtime for everything: on a connection's path
//! nothing here needs another thread. With one shared scheduler every
//! spawn, wake and I/O event goes through its shared queues and the
//! cross-thread wake-ups they need; with one runtime per thread a
//! connection's task is queued, polled and woken on one thread only, and
//! the accept queues themselves are per worker, so N workers scale with N
//! cores without a shared lock or a shared cache line on the way. What it
//! gives up is stealing: a worker whose connections are busier than the
//! others' is not helped. The kernel's hash of the 4-tuple spreads many
//! clients evenly, which is the ingress's load.
//!
//! The control plane (reconciler, admin API, sources) runs on the process's
//! main runtime, so a slow control-plane step never delays a worker.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The running workers. Dropping it stops them: each runtime ends, and
/// with it every connection task still on it.
#[derive(Debug)]
pub struct Workers {
    workers: Vec<Worker>,
    /// Round-robin cursor for tasks placed from outside (adopted connections).
    next: AtomicUsize,
}

#[derive(Debug)]
struct Worker {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `n` workers (at least one), each idle until given work.
    pub fn start(n: usize) -> io::Result<Workers> {
        let n = n.clamp(1, crate::config::bounds::MAX_WORKERS);
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("mse-worker-{i}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(rt.handle().clone()));
                    // Runs every task spawned on this runtime until stopped
                    // (or until `Workers` is dropped, which drops `stop_tx`).
                    rt.block_on(async move {
                        let _ = stop_rx.await;
                    });
                })?;
            let handle = ready_rx.recv().map_err(|_| {
                io::Error::other("worker thread ended before its runtime started")
            })??;
            workers.push(Worker {
                handle,
                stop: Some(stop_tx),
            });
        }
        Ok(Workers {
            workers,
            next: AtomicUsize::new(0),
        })
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Worker `i`'s runtime (modulo the count).
    pub fn handle(&self, i: usize) -> &Handle {
        &self.workers[i % self.workers.len()].handle
    }

    /// The next worker in turn: for connections that arrive other than by
    /// accept (an upgrade's), registered and run there.
    pub fn next(&self) -> &Handle {
        self.handle(self.next.fetch_add(1, Ordering::Relaxed))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.workers {
            if let Some(stop) = w.stop.take() {
                let _ = stop.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::task::TaskTracker;

    #[test]
    fn tasks_run_on_their_own_worker_thread() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(workers.len(), 2);
        let tracker = TaskTracker::new();
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            tracker.spawn_on(
                async move {
                    let name = std::thread::current().name().map(str::to_string);
                    let _ = tx.send(name);
                },
                workers.next(),
            );
        }
        let mut names: Vec<String> = (0..4).map(|_| rx.recv().unwrap().unwrap()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "mse-worker-0",
                "mse-worker-0",
                "mse-worker-1",
                "mse-worker-1"
            ]
        );
    }

    #[test]
    fn dropping_the_workers_ends_their_tasks() {
        let workers = Workers::start(1).unwrap();
        let tracker = TaskTracker::new();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        tracker.spawn_on(
            async move {
                let _held = tx;
                std::future::pending::<()>().await;
            },
            workers.next(),
        );
        drop(workers);
        // The task (and the sender it held) is dropped with its runtime.
        let got = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(got, Err(std::sync::mpsc::RecvTimeoutError::Disconnected));
    }
}
