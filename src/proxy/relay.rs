//! Both-way relay with half-close, an idle timeout and an external stop
//! signal: [`relay`] between two TCP sockets (passthrough);
//! [`super::stream_relay`] between any two byte streams (terminate) shares
//! its pieces ([`Counters`], [`RelayEnd`], [`StopOrIdle`]).
//!
//! Each direction borrows a pooled buffer for one read attempt and gives it
//! back when the read would block, so an idle connection costs its sockets
//! and small futures, no relay buffers.
//!
//! A passthrough relay can also be *paused* ([`relay_pausable`]) for an
//! upgrade's hand-off: each direction stops at the next point where it
//! owns no byte in the kernel's pipes (a read not begun, or a write cut
//! short, its unwritten rest returned), so the relay ends with its two
//! sockets intact and a [`Carry`] of what was read but not yet written. A
//! relay started with that carry (in this process or the next) writes it
//! first: the peers see one unbroken stream.

use std::future::{poll_fn, Future};
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::buffer::PooledBuf;

/// Bytes moved so far; readable after the relay ends, however it ended.
/// Also when bytes last moved (for the idle timeout): the caller owns this,
/// so the relay future borrows it instead of holding it.
#[derive(Debug)]
pub struct Counters {
    /// Client to upstream.
    pub up: AtomicU64,
    /// Upstream to client.
    pub down: AtomicU64,
    activity: Activity,
    /// One direction has passed its EOF on (see [`pass_eof`]).
    eof_passed: AtomicBool,
    /// The relay is pausing: each direction stops at its next safe point.
    pausing: AtomicBool,
}

impl Counters {
    /// Bytes moved just now: the idle timeout starts over.
    pub(super) fn touch(&self) {
        self.activity.touch();
    }
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            activity: Activity::new(),
            eof_passed: AtomicBool::new(false),
            pausing: AtomicBool::new(false),
        }
    }
}

/// What a paused relay hands on: per direction, the bytes read but not
/// yet written, and whether that direction had already ended (its EOF
/// passed on, so it is not read again).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Carry {
    /// Read from the client, not yet written upstream.
    pub up: Vec<u8>,
    /// Read from the upstream, not yet written to the client.
    pub down: Vec<u8>,
    pub up_done: bool,
    pub down_done: bool,
}

/// Why the relay stopped.
#[derive(Debug)]
pub enum RelayEnd {
    /// Both directions reached EOF.
    Closed,
    /// No byte either way for the idle timeout.
    Idle,
    /// The stop future resolved.
    Stopped,
    /// The pause future resolved ([`relay_pausable`]): the sockets are
    /// intact; the carry is what the next relay on them must write first.
    Paused(Box<Carry>),
    /// Reading from or writing to the client failed.
    ClientError(io::Error),
    /// Reading from or writing to the upstream failed.
    UpstreamError(io::Error),
}

pub(super) enum HalfError {
    Read(io::Error),
    Write(io::Error),
}

impl HalfError {
    /// The relay's end for this error: in the client-to-upstream direction
    /// (`up`) a read failed on the client and a write on the upstream; the
    /// other way round otherwise.
    pub(super) fn end(self, up: bool) -> RelayEnd {
        match (self, up) {
            (HalfError::Read(e), true) | (HalfError::Write(e), false) => RelayEnd::ClientError(e),
            (HalfError::Write(e), true) | (HalfError::Read(e), false) => RelayEnd::UpstreamError(e),
        }
    }
}

/// Last activity, as milliseconds since the relay began (one atomic store
/// per read or write, no clock per byte). The admin listener's idle timeout
/// uses it too.
#[derive(Debug)]
pub(crate) struct Activity {
    base: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn idle_deadline(&self, idle: Duration) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }
}

/// Relays until both sides have closed their write halves, one side fails,
/// nothing moves for `idle`, or `stop` resolves. An EOF from one side shuts
/// down the other side's write half; the opposite direction keeps flowing.
pub fn relay<'a, F>(
    client: &'a mut TcpStream,
    upstream: &'a mut TcpStream,
    idle: Duration,
    stop: F,
    counters: &'a Counters,
    splice: bool,
) -> impl Future<Output = RelayEnd> + 'a
where
    F: Future<Output = ()> + 'a,
{
    let paused = std::future::pending();
    relay_pausable(
        client,
        upstream,
        idle,
        stop,
        paused,
        counters,
        splice,
        Carry::default(),
    )
}

/// As [`relay`], starting with `carry` (bytes to write first, directions
/// already ended), and ending with [`RelayEnd::Paused`] when `pause`
/// resolves: no byte is lost or duplicated, see the module doc.
///
/// Not an `async fn`: the two directions are moved straight into the
/// returned future. Made inside an `async fn` and then moved into `drive`,
/// they would keep their first slot too, and every idle connection would
/// pay for them twice.
#[allow(clippy::too_many_arguments)]
pub fn relay_pausable<'a, F, P>(
    client: &'a mut TcpStream,
    upstream: &'a mut TcpStream,
    idle: Duration,
    stop: F,
    pause: P,
    counters: &'a Counters,
    splice: bool,
    carry: Carry,
) -> impl Future<Output = RelayEnd> + 'a
where
    F: Future<Output = ()> + 'a,
    P: Future<Output = ()> + 'a,
{
    counters.pausing.store(false, Ordering::Relaxed);
    if carry.up_done || carry.down_done {
        counters.eof_passed.store(true, Ordering::Relaxed);
    }
    let (client_rd, client_wr) = client.split();
    let (upstream_rd, upstream_wr) = upstream.split();
    let Carry {
        up,
        down,
        up_done,
        down_done,
    } = carry;
    let up = copy_half(client_rd, upstream_wr, &counters.up, counters, splice, up);
    let down = copy_half(
        upstream_rd,
        client_wr,
        &counters.down,
        counters,
        splice,
        down,
    );
    Drive {
        up,
        down,
        end: StopOrIdle::new(stop, idle),
        pause,
        up_state: if up_done { DONE } else { RUNNING },
        down_state: if down_done { DONE } else { RUNNING },
        carry: None,
        counters,
    }
}

const RUNNING: u8 = 0;
const DONE: u8 = 1;
const PAUSED: u8 = 2;

pin_project_lite::pin_project! {
    /// Runs both directions until both are done, one fails, nothing moves
    /// for `idle`, `stop` resolves, or `pause` does and both directions
    /// reached a safe point. A hand-written future rather than an
    /// `async fn` with `select!`: that would move the futures it is given
    /// into pinned locals and keep their argument slots as well, doubling
    /// what every idle connection holds.
    struct Drive<'a, A, B, F, P> {
        #[pin]
        up: A,
        #[pin]
        down: B,
        #[pin]
        end: StopOrIdle<F>,
        #[pin]
        pause: P,
        // RUNNING, DONE or PAUSED.
        up_state: u8,
        down_state: u8,
        // Filled as directions pause (boxed: most relays never pause).
        carry: Option<Box<Carry>>,
        counters: &'a Counters,
    }
}

impl<A, B, F, P> Future for Drive<'_, A, B, F, P>
where
    A: Future<Output = Result<Option<Vec<u8>>, HalfError>>,
    B: Future<Output = Result<Option<Vec<u8>>, HalfError>>,
    F: Future<Output = ()>,
    P: Future<Output = ()>,
{
    type Output = RelayEnd;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<RelayEnd> {
        let this = self.project();
        let pausing = &this.counters.pausing;
        // Before the directions: polled after the flag is set, each one
        // stops at once at its safe point (see `copy_half`).
        if !pausing.load(Ordering::Relaxed) && this.pause.poll(cx).is_ready() {
            pausing.store(true, Ordering::Relaxed);
        }
        if *this.up_state == RUNNING {
            match this.up.poll(cx) {
                Poll::Ready(Ok(None)) => *this.up_state = DONE,
                Poll::Ready(Ok(Some(rest))) => {
                    *this.up_state = PAUSED;
                    this.carry.get_or_insert_default().up = rest;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(e.end(true)),
                Poll::Pending => {}
            }
        }
        if *this.down_state == RUNNING {
            match this.down.poll(cx) {
                Poll::Ready(Ok(None)) => *this.down_state = DONE,
                Poll::Ready(Ok(Some(rest))) => {
                    *this.down_state = PAUSED;
                    this.carry.get_or_insert_default().down = rest;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(e.end(false)),
                Poll::Pending => {}
            }
        }
        match (*this.up_state, *this.down_state) {
            (DONE, DONE) => return Poll::Ready(RelayEnd::Closed),
            (RUNNING, _) | (_, RUNNING) => {}
            (up, down) => {
                let mut carry = this.carry.take().unwrap_or_default();
                carry.up_done = up == DONE;
                carry.down_done = down == DONE;
                return Poll::Ready(RelayEnd::Paused(carry));
            }
        }
        this.end.poll_end(cx, this.counters)
    }
}

pin_project_lite::pin_project! {
    /// The two ways a relay ends while bytes could still move: the stop
    /// signal, and no byte either way for the idle timeout.
    pub(super) struct StopOrIdle<F> {
        #[pin]
        stop: F,
        #[pin]
        idle_timer: tokio::time::Sleep,
        idle: Duration,
    }
}

impl<F: Future<Output = ()>> StopOrIdle<F> {
    pub(super) fn new(stop: F, idle: Duration) -> Self {
        Self {
            stop,
            idle_timer: tokio::time::sleep(idle),
            idle,
        }
    }

    /// `Ready` with why the relay ends, or `Pending` with both waits armed.
    pub(super) fn poll_end(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        counters: &Counters,
    ) -> Poll<RelayEnd> {
        let mut this = self.project();
        if this.stop.poll(cx).is_ready() {
            return Poll::Ready(RelayEnd::Stopped);
        }
        // The timer is set to the last known deadline; when it fires, the
        // real deadline (bytes may have moved since) decides.
        while this.idle_timer.as_mut().poll(cx).is_ready() {
            let deadline = counters.activity.idle_deadline(*this.idle);
            if Instant::now() >= deadline {
                return Poll::Ready(RelayEnd::Idle);
            }
            this.idle_timer.as_mut().reset(deadline);
        }
        Poll::Pending
    }
}

/// One direction of [`relay`]. Small reads are copied through a pooled
/// buffer; once a read fills the buffer (a bulk transfer), the direction
/// switches to splice(2) on Linux (`splice`), and back to copying when a
/// splice moves less than [`BULK`]. Measured in `benches/relay.rs`: a
/// request and its answer cost fewer cycles copied, a large transfer fewer
/// spliced.
///
/// Reads go through the read half's `poll_read`, not `readable()` then
/// `try_read`: a short read there tells tokio the socket is drained, so the
/// next wait parks at once instead of costing one more read that would
/// only say "would block", a syscall saved per message each way.
///
/// `Ok(None)`: EOF passed on. `Ok(Some(rest))`: paused (the relay's
/// `pausing` flag), `rest` read here and not yet written. It pauses only
/// where it holds no byte that is not in `rest`: before a read, or in a
/// write (what is left of it is `rest`), or in a splice (the pipe drained
/// into `rest`). `carry` is written first.
async fn copy_half(
    mut from: ReadHalf<'_>,
    to: WriteHalf<'_>,
    bytes: &AtomicU64,
    counters: &Counters,
    splice: bool,
    carry: Vec<u8>,
) -> Result<Option<Vec<u8>>, HalfError> {
    let to = to.as_ref();
    let activity = &counters.activity;
    let pausing = &counters.pausing;
    if !carry.is_empty() {
        let rest = write_or_pause(to, &carry, pausing)
            .await
            .map_err(HalfError::Write)?;
        bytes.fetch_add((carry.len() - rest.len()) as u64, Ordering::Relaxed);
        if !rest.is_empty() {
            return Ok(Some(rest.to_vec()));
        }
    }
    drop(carry);
    let mut bulk = false;
    loop {
        #[cfg(target_os = "linux")]
        if splice && bulk {
            use super::splice::{chunk, Chunk, SpliceError};
            match chunk(from.as_ref(), to, pausing).await {
                Ok(Chunk::Moved(n)) => {
                    activity.touch();
                    bytes.fetch_add(n as u64, Ordering::Relaxed);
                    bulk = n >= BULK;
                    continue;
                }
                Ok(Chunk::Paused { moved, rest }) => {
                    bytes.fetch_add(moved as u64, Ordering::Relaxed);
                    return Ok(Some(rest));
                }
                Ok(Chunk::Eof) => {
                    pass_eof(to, counters);
                    return Ok(None);
                }
                Err(SpliceError::Read(e)) => return Err(HalfError::Read(e)),
                Err(SpliceError::Write(e)) => return Err(HalfError::Write(e)),
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (splice, bulk);
        let Some((buf, n)) = read_pooled(&mut from, pausing)
            .await
            .map_err(HalfError::Read)?
        else {
            return Ok(Some(Vec::new()));
        };
        if n == 0 {
            pass_eof(to, counters);
            return Ok(None);
        }
        activity.touch();
        let rest = write_or_pause(to, &buf[..n], pausing)
            .await
            .map_err(HalfError::Write)?;
        bytes.fetch_add((n - rest.len()) as u64, Ordering::Relaxed);
        if !rest.is_empty() {
            return Ok(Some(rest.to_vec()));
        }
        bulk = n == buf.len();
    }
}

/// Passes an EOF on: shuts `to`'s write half, so its peer sees the end
/// while it may still be sending the other way. Only for the first
/// direction to end: when the second ends the relay is over, both sockets
/// are closed at once, and closing a socket whose input is all read sends
/// the same FIN, so a shutdown there would be one syscall per connection
/// for nothing.
fn pass_eof(to: &TcpStream, counters: &Counters) {
    if !counters.eof_passed.swap(true, Ordering::Relaxed) {
        let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
    }
}

/// One read into a buffer lent from the pool for the attempt only: back to
/// the pool if the read would block (a pending read has taken no bytes).
/// `None` once `pausing` is set: no read is begun.
async fn read_pooled<R: AsyncRead + Unpin>(
    from: &mut R,
    pausing: &AtomicBool,
) -> io::Result<Option<(PooledBuf, usize)>> {
    poll_fn(|cx| {
        if pausing.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(None));
        }
        let mut buf = PooledBuf::take();
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut *from).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                Poll::Ready(Ok(Some((buf, n))))
            }
        }
    })
    .await
}

/// A splice that moves at least this much keeps a direction splicing.
#[cfg(target_os = "linux")]
const BULK: usize = 16 * 1024;

/// Writes all of `data`, waiting for writability as needed.
///
/// Waits through `poll_write_ready`, which parks the task in the socket's
/// own writer slot, rather than `writable()`, whose future carries a waiter
/// node (152 bytes): this future is part of what every relayed connection
/// holds while idle. The slot has room for one task, and each socket's
/// write side has one writer here.
pub fn write_all<'a>(
    to: &'a TcpStream,
    mut data: &'a [u8],
) -> impl Future<Output = io::Result<()>> + 'a {
    poll_fn(move |cx| {
        while !data.is_empty() {
            match to.try_write(data) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::task::ready!(to.poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    })
}

/// As [`write_all`], but it stops when `pausing` is set and returns what
/// is left unwritten (empty: all written).
fn write_or_pause<'a>(
    to: &'a TcpStream,
    mut data: &'a [u8],
    pausing: &'a AtomicBool,
) -> impl Future<Output = io::Result<&'a [u8]>> + 'a {
    poll_fn(move |cx| {
        while !data.is_empty() {
            if pausing.load(Ordering::Relaxed) {
                return Poll::Ready(Ok(data));
            }
            match to.try_write(data) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::task::ready!(to.poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(data))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an idle passthrough connection holds is mostly this future:
    /// 2,536 bytes as an `async fn` over `select!` (which kept every
    /// sub-future twice), 1,160 as a hand-written future, 560 (with a
    /// zero-sized stop; rustc 1.95) since writes and splices wait in the
    /// sockets' own waker slots instead of readiness futures; 744 since
    /// it can pause for an upgrade's hand-off (the pause wait, each
    /// direction's carry and pause state). The bound leaves room for
    /// compiler changes but catches a regression.
    #[tokio::test]
    async fn the_socket_relay_future_stays_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (mut b, _) = l.accept().await.unwrap();
        let counters = Counters::default();
        let f = relay(
            &mut a,
            &mut b,
            Duration::from_secs(1),
            std::future::pending(),
            &counters,
            true,
        );
        let size = std::mem::size_of_val(&f);
        assert!(size <= 800, "relay future is {size} bytes");
    }
}
