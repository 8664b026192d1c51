//! What an upgrade's connection hand-off moves and how an offer is
//! answered (see `handoff.rs`): plain types that `Shared` holds, importing
//! nothing of the data plane but the relay's [`Carry`].

use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::relay::Carry;

/// One established passthrough connection on its way to the next process.
#[derive(Debug)]
pub struct Moved {
    pub client: std::net::TcpStream,
    pub upstream: std::net::TcpStream,
    /// Its route's name: the new process finds its own entry by it.
    pub route: String,
    /// The client (or the source a trusted PROXY header named).
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub sni: Option<String>,
    /// Bytes relayed before the move (hello included), for the log.
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub carry: Carry,
}

/// A connection offered to the hand-off, and where its answer goes.
#[derive(Debug)]
pub struct Offer {
    moved: Option<Moved>,
    answer: Option<oneshot::Sender<Result<(), Moved>>>,
}

impl Offer {
    /// The connection, to send: answer with [`Offer::taken`] or
    /// [`Offer::back`].
    pub fn moved(&self) -> &Moved {
        self.moved
            .as_ref()
            .expect("an offer holds its connection until answered")
    }

    /// The new process acknowledged it: this process forgets it.
    pub fn taken(mut self) {
        self.moved = None;
        if let Some(a) = self.answer.take() {
            let _ = a.send(Ok(()));
        }
    }

    /// Not taken: this process relays it on.
    pub fn back(self) {
        // Drop gives it back.
    }
}

impl Drop for Offer {
    fn drop(&mut self) {
        if let (Some(m), Some(a)) = (self.moved.take(), self.answer.take()) {
            let _ = a.send(Err(m));
        }
    }
}

/// Whether a hand-off is under way, and where offers go.
#[derive(Debug, Default)]
pub struct Handoff {
    /// Cancelled when the hand-off begins: every passthrough relay pauses.
    begun: CancellationToken,
    /// Held only to clone or replace the sender, never across an `.await`.
    offers: Mutex<Option<mpsc::UnboundedSender<Offer>>>,
}

impl Handoff {
    /// Starts the hand-off: relays pause and offer themselves on `tx`.
    pub fn begin(&self, tx: mpsc::UnboundedSender<Offer>) {
        *self.offers.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        self.begun.cancel();
    }

    /// No more offers: later pauses get their connection back at once.
    pub fn end(&self) {
        *self.offers.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Resolves once the hand-off has begun.
    pub(super) async fn begun(&self) {
        self.begun.cancelled().await
    }

    /// Offers `moved` and waits for the answer: `Err` gives it back.
    pub(super) async fn offer(&self, moved: Box<Moved>) -> Result<(), Moved> {
        let moved = *moved;
        let tx = self
            .offers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(tx) = tx else { return Err(moved) };
        let (answer, rx) = oneshot::channel();
        let offer = Offer {
            moved: Some(moved),
            answer: Some(answer),
        };
        if let Err(mpsc::error::SendError(mut offer)) = tx.send(offer) {
            offer.answer = None;
            return Err(offer
                .moved
                .take()
                .expect("unsent offer holds its connection"));
        }
        // The offer's drop always answers, so a closed channel here means
        // the connection is gone with it: it cannot be, see `Offer::drop`.
        rx.await.unwrap_or(Ok(()))
    }
}
