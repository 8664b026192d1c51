//! Both-way relay with half-close, an idle timeout and an external stop
//! signal: [`relay`] between two TCP sockets (passthrough), [`relay_streams`]
//! between any two byte streams (terminate, where one or both sides are TLS).
//!
//! Each direction borrows a pooled buffer only while bytes are there: the
//! socket relay waits for readiness first; the stream relay lends a buffer to
//! each read attempt and takes it back when the read would block. So an idle
//! connection costs its sockets and small futures, no relay buffers.

use std::future::{poll_fn, Future};
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::buffer::PooledBuf;

/// Bytes moved so far; readable after the relay ends, however it ended.
#[derive(Debug, Default)]
pub struct Counters {
    /// Client to upstream.
    pub up: AtomicU64,
    /// Upstream to client.
    pub down: AtomicU64,
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
    /// Reading from or writing to the client failed.
    ClientError(io::Error),
    /// Reading from or writing to the upstream failed.
    UpstreamError(io::Error),
}

enum HalfError {
    Read(io::Error),
    Write(io::Error),
}

/// Last activity, as milliseconds since the relay began.
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_deadline(&self, idle: Duration) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }
}

/// Relays until both sides have closed their write halves, one side fails,
/// nothing moves for `idle`, or `stop` resolves. An EOF from one side shuts
/// down the other side's write half; the opposite direction keeps flowing.
#[allow(clippy::too_many_arguments)]
pub async fn relay<F>(
    client: &TcpStream,
    upstream: &TcpStream,
    idle: Duration,
    stop: F,
    counters: &Counters,
    splice: bool,
) -> RelayEnd
where
    F: Future<Output = ()>,
{
    let activity = Activity::new();
    let up = copy_half(client, upstream, &counters.up, &activity, splice);
    let down = copy_half(upstream, client, &counters.down, &activity, splice);
    drive(up, down, &activity, idle, stop).await
}

/// [`relay`] for any two byte streams, with the same semantics: an EOF read
/// from one side shuts down the other side's write half (for TLS: a
/// close_notify, then FIN) while the opposite direction keeps flowing.
pub async fn relay_streams<C, U, F>(
    client: C,
    upstream: U,
    idle: Duration,
    stop: F,
    counters: &Counters,
) -> RelayEnd
where
    C: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite,
    F: Future<Output = ()>,
{
    let activity = Activity::new();
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut upstream_rd, mut upstream_wr) = tokio::io::split(upstream);
    let up = copy_stream(&mut client_rd, &mut upstream_wr, &counters.up, &activity);
    let down = copy_stream(&mut upstream_rd, &mut client_wr, &counters.down, &activity);
    drive(up, down, &activity, idle, stop).await
}

/// Runs both directions until both are done, one fails, nothing moves for
/// `idle`, or `stop` resolves.
async fn drive<A, B, F>(up: A, down: B, activity: &Activity, idle: Duration, stop: F) -> RelayEnd
where
    A: Future<Output = Result<(), HalfError>>,
    B: Future<Output = Result<(), HalfError>>,
    F: Future<Output = ()>,
{
    tokio::pin!(up, down, stop);
    let (mut up_done, mut down_done) = (false, false);
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    loop {
        tokio::select! {
            r = &mut up, if !up_done => match r {
                Ok(()) => up_done = true,
                Err(HalfError::Read(e)) => return RelayEnd::ClientError(e),
                Err(HalfError::Write(e)) => return RelayEnd::UpstreamError(e),
            },
            r = &mut down, if !down_done => match r {
                Ok(()) => down_done = true,
                Err(HalfError::Read(e)) => return RelayEnd::UpstreamError(e),
                Err(HalfError::Write(e)) => return RelayEnd::ClientError(e),
            },
            () = &mut idle_timer => {
                let deadline = activity.idle_deadline(idle);
                if Instant::now() >= deadline {
                    return RelayEnd::Idle;
                }
                idle_timer.as_mut().reset(deadline);
            }
            () = &mut stop => return RelayEnd::Stopped,
        }
        if up_done && down_done {
            return RelayEnd::Closed;
        }
    }
}

async fn copy_half(
    from: &TcpStream,
    to: &TcpStream,
    bytes: &AtomicU64,
    activity: &Activity,
    splice: bool,
) -> Result<(), HalfError> {
    #[cfg(target_os = "linux")]
    if splice {
        return splice_half(from, to, bytes, activity).await;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = splice;
    loop {
        from.readable().await.map_err(HalfError::Read)?;
        let mut buf = PooledBuf::take();
        let n = match from.try_read(&mut buf) {
            Ok(0) => {
                // Pass the EOF on; the peer may still be sending the other way.
                let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(HalfError::Read(e)),
        };
        activity.touch();
        write_all(to, &buf[..n]).await.map_err(HalfError::Write)?;
        bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// [`copy_half`] through splice(2): the bytes never enter user space.
#[cfg(target_os = "linux")]
async fn splice_half(
    from: &TcpStream,
    to: &TcpStream,
    bytes: &AtomicU64,
    activity: &Activity,
) -> Result<(), HalfError> {
    use super::splice::{chunk, Chunk, SpliceError};
    loop {
        match chunk(from, to).await {
            Ok(Chunk::Moved(n)) => {
                activity.touch();
                bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Ok(Chunk::Eof) => {
                let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
                return Ok(());
            }
            Err(SpliceError::Read(e)) => return Err(HalfError::Read(e)),
            Err(SpliceError::Write(e)) => return Err(HalfError::Write(e)),
        }
    }
}

/// One direction of [`relay_streams`]. A read that ends without the peer's
/// TLS close_notify (`UnexpectedEof`, what most HTTP clients do) is taken as
/// an EOF like any other: the peer is gone either way.
async fn copy_stream<R, W>(
    from: &mut R,
    to: &mut W,
    bytes: &AtomicU64,
    activity: &Activity,
) -> Result<(), HalfError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let read = poll_fn(|cx| {
            // Lent for this attempt only; back to the pool if it would block
            // (a `Pending` read has taken no bytes).
            let mut buf = PooledBuf::take();
            let mut rb = ReadBuf::new(&mut buf);
            match Pin::new(&mut *from).poll_read(cx, &mut rb) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    Poll::Ready(Ok((buf, n)))
                }
            }
        })
        .await;
        let (buf, n) = match read {
            Ok((_, 0)) => (None, 0),
            Ok((buf, n)) => (Some(buf), n),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => (None, 0),
            Err(e) => return Err(HalfError::Read(e)),
        };
        let Some(buf) = buf else {
            // Pass the EOF on; the peer may still be sending the other way.
            let _ = to.shutdown().await;
            return Ok(());
        };
        activity.touch();
        to.write_all(&buf[..n]).await.map_err(HalfError::Write)?;
        to.flush().await.map_err(HalfError::Write)?;
        bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Writes all of `data`, waiting for writability as needed.
pub async fn write_all(to: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match to.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt};

    #[tokio::test]
    async fn stream_relay_passes_eof_one_way_and_keeps_the_other() {
        let (mut client, client_side) = duplex(1024);
        let (upstream_side, mut upstream) = duplex(1024);
        let counters = Counters::default();
        let relay = relay_streams(
            client_side,
            upstream_side,
            Duration::from_secs(60),
            std::future::pending(),
            &counters,
        );
        let peers = async {
            client.write_all(b"request").await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            upstream.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"request", "upstream sees the bytes, then EOF");
            // After the client's EOF the answer still flows back.
            upstream.write_all(b"answer").await.unwrap();
            upstream.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, b"answer");
        };
        let (end, ()) = tokio::join!(relay, peers);
        assert!(matches!(end, RelayEnd::Closed), "{end:?}");
        assert_eq!(counters.up.load(Ordering::Relaxed), 7);
        assert_eq!(counters.down.load(Ordering::Relaxed), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn stream_relay_ends_when_idle_or_stopped() {
        let (_client, client_side) = duplex(64);
        let (upstream_side, _upstream) = duplex(64);
        let started = Instant::now();
        let end = relay_streams(
            client_side,
            upstream_side,
            Duration::from_secs(30),
            std::future::pending(),
            &Counters::default(),
        )
        .await;
        assert!(matches!(end, RelayEnd::Idle), "{end:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(30));

        let (_client, client_side) = duplex(64);
        let (upstream_side, _upstream) = duplex(64);
        let end = relay_streams(
            client_side,
            upstream_side,
            Duration::from_secs(30),
            tokio::time::sleep(Duration::from_secs(1)),
            &Counters::default(),
        )
        .await;
        assert!(matches!(end, RelayEnd::Stopped), "{end:?}");
    }
}
