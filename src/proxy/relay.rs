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
use std::task::{ready, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::tcp::ReadHalf;
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
    /// Counting on from `up` and `down` bytes already relayed.
    pub fn starting_at(up: u64, down: u64) -> Self {
        let c = Self::default();
        c.up.store(up, Ordering::Relaxed);
        c.down.store(down, Ordering::Relaxed);
        c
    }

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
/// Not an `async fn`: everything is moved straight into the returned
/// future, held once.
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
    let Carry {
        up,
        down,
        up_done,
        down_done,
    } = carry;
    Drive {
        client: client.split().0,
        upstream: upstream.split().0,
        up: Dir::start(up, up_done),
        down: Dir::start(down, down_done),
        end: StopOrIdle::new(stop, idle),
        pause,
        carry: None,
        counters,
        splice,
    }
}

pin_project_lite::pin_project! {
    /// Runs both directions until both are done, one fails, nothing moves
    /// for `idle`, `stop` resolves, or `pause` does and both directions
    /// reached a safe point. A hand-written future over two hand-written
    /// direction state machines ([`Dir`]): `async fn`s and `select!` keep
    /// every argument and sub-future in slots of their own (twice, for an
    /// `async fn`'s arguments), and this state is most of what every idle
    /// passthrough connection holds.
    struct Drive<'a, F, P> {
        // The read halves; each direction writes to the other's socket.
        client: ReadHalf<'a>,
        upstream: ReadHalf<'a>,
        // Client to upstream.
        up: Dir,
        // Upstream to client.
        down: Dir,
        #[pin]
        end: StopOrIdle<F>,
        #[pin]
        pause: P,
        // Filled as directions pause (boxed: most relays never pause).
        carry: Option<Box<Carry>>,
        counters: &'a Counters,
        splice: bool,
    }
}

impl<F, P> Future for Drive<'_, F, P>
where
    F: Future<Output = ()>,
    P: Future<Output = ()>,
{
    type Output = RelayEnd;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<RelayEnd> {
        let this = self.project();
        let counters = *this.counters;
        let pausing = &counters.pausing;
        // Before the directions: polled after the flag is set, each one
        // stops at once at its safe point (see `Dir`).
        if !pausing.load(Ordering::Relaxed) && this.pause.poll(cx).is_ready() {
            pausing.store(true, Ordering::Relaxed);
        }
        let splice = *this.splice;
        let up_to = this.upstream.as_ref();
        match this
            .up
            .poll_move(cx, this.client, up_to, &counters.up, counters, splice)
        {
            Poll::Ready(Ok(Some(rest))) => this.carry.get_or_insert_default().up = rest,
            Poll::Ready(Ok(None)) | Poll::Pending => {}
            Poll::Ready(Err(e)) => return Poll::Ready(e.end(true)),
        }
        let down_to = this.client.as_ref();
        match this
            .down
            .poll_move(cx, this.upstream, down_to, &counters.down, counters, splice)
        {
            Poll::Ready(Ok(Some(rest))) => this.carry.get_or_insert_default().down = rest,
            Poll::Ready(Ok(None)) | Poll::Pending => {}
            Poll::Ready(Err(e)) => return Poll::Ready(e.end(false)),
        }
        match (&*this.up, &*this.down) {
            (Dir::Done, Dir::Done) => return Poll::Ready(RelayEnd::Closed),
            (Dir::Done | Dir::Paused, Dir::Done | Dir::Paused) => {
                let mut carry = this.carry.take().unwrap_or_default();
                carry.up_done = matches!(this.up, Dir::Done);
                carry.down_done = matches!(this.down, Dir::Done);
                return Poll::Ready(RelayEnd::Paused(carry));
            }
            _ => {}
        }
        this.end.poll_end(cx, counters)
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

/// Bytes read and not yet written: a carry from a paused relay, or a
/// pooled buffer's first `len` bytes.
enum Unwritten {
    Carry(Vec<u8>),
    Pooled(PooledBuf),
}

impl std::ops::Deref for Unwritten {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Unwritten::Carry(v) => v,
            Unwritten::Pooled(b) => b,
        }
    }
}

/// One direction of a socket relay. Small reads are copied through a
/// pooled buffer; once a read fills the buffer (a bulk transfer), the
/// direction switches to splice(2) on Linux (`splice`), and back to
/// copying when a chunk moves less than [`BULK`]. Measured in
/// `benches/relay.rs`: a request and its answer cost fewer cycles copied,
/// a large transfer fewer spliced.
///
/// Waiting, it holds nothing: no buffer, no pipe, no readiness future
/// (it parks in the sockets' own waker slots). Reads go through the read
/// half's `poll_read`, not `poll_read_ready` then `try_read`: a short read
/// there tells tokio the socket is drained, so the next wait parks at once
/// instead of costing one more read that would only say "would block".
///
/// Pausing (the relay's `pausing` flag), it stops only where it holds no
/// byte that it does not hand back: before a read, or in a write (the
/// unwritten rest), or in a splice (the pipe drained back out).
enum Dir {
    /// Waiting to read, copying.
    Read,
    /// Waiting to read, splicing.
    SpliceRead,
    /// `buf[at..len]` is still to be written.
    Write {
        buf: Unwritten,
        at: usize,
        len: usize,
    },
    /// `left` bytes of a chunk of `n` are still in the pipe.
    #[cfg(target_os = "linux")]
    SpliceWrite {
        pipe: super::splice::Loan,
        n: usize,
        left: usize,
    },
    /// EOF read and passed on.
    Done,
    /// Stopped for a hand-off; what it held went into the carry.
    Paused,
}

impl Dir {
    fn start(carry: Vec<u8>, done: bool) -> Dir {
        match (done, carry.is_empty()) {
            (true, _) => Dir::Done,
            (false, true) => Dir::Read,
            (false, false) => Dir::Write {
                len: carry.len(),
                buf: Unwritten::Carry(carry),
                at: 0,
            },
        }
    }

    /// Moves bytes from `from` to `to` until both would block (`Pending`),
    /// the direction ends (`Ok(None)`: EOF passed on), it pauses
    /// (`Ok(Some(rest))`: what it read and did not write), or it fails.
    /// Not polled again once it has ended or paused.
    fn poll_move(
        &mut self,
        cx: &mut std::task::Context<'_>,
        from: &mut ReadHalf<'_>,
        to: &TcpStream,
        bytes: &AtomicU64,
        counters: &Counters,
        splice: bool,
    ) -> Poll<Result<Option<Vec<u8>>, HalfError>> {
        let pausing = || counters.pausing.load(Ordering::Relaxed);
        loop {
            match self {
                Dir::Done | Dir::Paused => return Poll::Pending,
                Dir::Read => {
                    if pausing() {
                        *self = Dir::Paused;
                        return Poll::Ready(Ok(Some(Vec::new())));
                    }
                    // Lent for this read attempt only: back to the pool
                    // if the read would block (a pending read takes no
                    // bytes).
                    let mut buf = PooledBuf::take();
                    let mut rb = ReadBuf::new(&mut buf);
                    ready!(Pin::new(&mut *from).poll_read(cx, &mut rb)).map_err(HalfError::Read)?;
                    let len = rb.filled().len();
                    if len == 0 {
                        pass_eof(to, counters);
                        *self = Dir::Done;
                        return Poll::Ready(Ok(None));
                    }
                    counters.activity.touch();
                    *self = Dir::Write {
                        buf: Unwritten::Pooled(buf),
                        at: 0,
                        len,
                    };
                }
                Dir::Write { buf, at, len } => {
                    while *at < *len {
                        if pausing() {
                            let rest = buf[*at..*len].to_vec();
                            *self = Dir::Paused;
                            return Poll::Ready(Ok(Some(rest)));
                        }
                        match written(to.try_write(&buf[*at..*len]), bytes)? {
                            Some(n) => *at += n,
                            None => ready!(to.poll_write_ready(cx)).map_err(HalfError::Write)?,
                        }
                    }
                    let bulk = matches!(buf, Unwritten::Pooled(b) if *len == b.len());
                    *self = if splice && bulk && cfg!(target_os = "linux") {
                        Dir::SpliceRead
                    } else {
                        Dir::Read
                    };
                }
                #[cfg(not(target_os = "linux"))]
                Dir::SpliceRead => *self = Dir::Read,
                #[cfg(target_os = "linux")]
                Dir::SpliceRead => {
                    if pausing() {
                        *self = Dir::Paused;
                        return Poll::Ready(Ok(Some(Vec::new())));
                    }
                    ready!(from.as_ref().poll_read_ready(cx)).map_err(HalfError::Read)?;
                    // No pipe to be had (out of descriptors): this chunk
                    // is copied, and the next bulk one tries again. The
                    // connection is not what failed.
                    let mut pipe = match super::splice::Loan::take() {
                        Ok(pipe) => pipe,
                        Err(e) => {
                            super::splice::pipe_failed(&e);
                            *self = Dir::Read;
                            continue;
                        }
                    };
                    match pipe.fill(from.as_ref()) {
                        Ok(0) => {
                            pass_eof(to, counters);
                            *self = Dir::Done;
                            return Poll::Ready(Ok(None));
                        }
                        Ok(n) => {
                            counters.activity.touch();
                            *self = Dir::SpliceWrite { pipe, n, left: n };
                        }
                        // Readiness cleared: the next poll parks.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Poll::Ready(Err(HalfError::Read(e))),
                    }
                }
                #[cfg(target_os = "linux")]
                Dir::SpliceWrite { pipe, n, left } => {
                    while *left > 0 {
                        match written(pipe.flush(to, *left), bytes)? {
                            Some(m) => *left -= m,
                            None if pausing() => {
                                let rest = pipe.drain(*left).map_err(HalfError::Read)?;
                                *self = Dir::Paused;
                                return Poll::Ready(Ok(Some(rest)));
                            }
                            None => ready!(to.poll_write_ready(cx)).map_err(HalfError::Write)?,
                        }
                    }
                    pipe.emptied();
                    *self = if *n >= BULK {
                        Dir::SpliceRead
                    } else {
                        Dir::Read
                    };
                }
            }
        }
    }
}

/// What one write attempt did: `Some(n)`, `n` bytes went (counted in
/// `bytes`); `None`, the socket is full (its readiness cleared, so the
/// next wait parks).
fn written(attempt: io::Result<usize>, bytes: &AtomicU64) -> Result<Option<usize>, HalfError> {
    match attempt {
        Ok(0) => Err(HalfError::Write(io::ErrorKind::WriteZero.into())),
        Ok(n) => {
            bytes.fetch_add(n as u64, Ordering::Relaxed);
            Ok(Some(n))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(HalfError::Write(e)),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What an idle passthrough connection holds is mostly this future:
    /// 2,536 bytes as an `async fn` over `select!` (which kept every
    /// sub-future twice), 1,160 as a hand-written future, 560 (with a
    /// zero-sized stop; rustc 1.95) since writes and splices wait in the
    /// sockets' own waker slots instead of readiness futures; 744 since
    /// it can pause for an upgrade's hand-off (the pause wait, each
    /// direction's carry and pause state); 248 since the two directions
    /// are hand-written state machines (`Dir`) instead of `async fn`s
    /// that kept every argument twice and a splice future inline. The
    /// bound leaves room for compiler changes but catches a regression.
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
        assert!(size <= 320, "relay future is {size} bytes");
    }
}
