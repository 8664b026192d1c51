//! How a route's open connections learn to close, without a lock per
//! wakeup.
//!
//! A [`Closer`] is a cancellation token plus a flag set just before the
//! token is cancelled. tokio-util's wait on a token locks the token's mutex
//! (`is_cancelled`) and its `Notify`'s waiter list on every poll, and a
//! relay polls its stop signal at every wakeup: with every connection of a
//! busy route waiting on that route's token, each byte relayed on any core
//! took the same two locks. [`Closing`] polls the token's wait once, to
//! register, and again only once a flag says a close has begun: a wakeup
//! then costs two atomic loads of lines that are written once in a route's
//! life.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// A cancellation token whose cancellation can be seen without a lock.
#[derive(Debug, Default)]
pub struct Closer {
    token: CancellationToken,
    /// Set before `token` is cancelled, never cleared.
    closing: AtomicBool,
}

impl Closer {
    pub fn new() -> Closer {
        Closer::default()
    }

    /// A closer that is closed with this one too (its token is a child of
    /// this one's).
    pub fn child(&self) -> Closer {
        Closer {
            token: self.token.child_token(),
            closing: AtomicBool::new(false),
        }
    }

    /// Closes: the flag first, so that whoever the cancellation wakes sees
    /// it.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether `close` has begun on this closer (not on a parent).
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

pin_project_lite::pin_project! {
    /// Resolves when `closer` or `root` (its ancestor) is closed.
    ///
    /// Polled from one task only (a connection's): after the first poll
    /// the token's wait is not polled again until a flag is set, so the
    /// waker it registered first is the one a cancellation wakes.
    pub struct Closing<'a> {
        closer: &'a Closer,
        root: &'a Closer,
        #[pin]
        wait: WaitForCancellationFuture<'a>,
        registered: bool,
    }
}

impl<'a> Closing<'a> {
    pub fn new(closer: &'a Closer, root: &'a Closer) -> Closing<'a> {
        Closing {
            closer,
            root,
            wait: closer.token.cancelled(),
            registered: false,
        }
    }
}

impl Future for Closing<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        // A flag set means the token is cancelled or about to be: poll the
        // wait (it re-registers if the cancellation has not landed yet).
        if !*this.registered || this.closer.is_closing() || this.root.is_closing() {
            *this.registered = true;
            return this.wait.poll(cx);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn poll_once(f: Pin<&mut Closing<'_>>) -> Poll<()> {
        f.poll(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[test]
    fn closing_the_route_or_the_root_resolves_it_and_nothing_else_does() {
        let root = Closer::new();
        let route = root.child();
        let other = root.child();
        let mut f = Box::pin(Closing::new(&route, &root));
        assert!(poll_once(f.as_mut()).is_pending());
        other.close();
        assert!(poll_once(f.as_mut()).is_pending());
        route.close();
        assert!(poll_once(f.as_mut()).is_ready());

        let route = root.child();
        let mut f = Box::pin(Closing::new(&route, &root));
        assert!(poll_once(f.as_mut()).is_pending());
        root.close();
        assert!(poll_once(f.as_mut()).is_ready());
        assert!(route.token().is_cancelled(), "a child closes with its root");
    }

    #[tokio::test]
    async fn a_waiting_task_is_woken_by_the_close() {
        let root = Arc::new(Closer::new());
        let route = Arc::new(root.child());
        let (r, c) = (Arc::clone(&root), Arc::clone(&route));
        let waiter = tokio::spawn(async move { Closing::new(&c, &r).await });
        tokio::task::yield_now().await;
        route.close();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken by the close")
            .unwrap();
    }
}
