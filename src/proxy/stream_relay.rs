//! The relay between two byte streams (terminate, where one or both sides
//! are TLS), with the socket relay's semantics: half-close, the idle
//! timeout, the stop signal.
//!
//! One hand-written future owns both streams and moves bytes both ways in
//! its own `poll`. The usual shape (split each stream, one copy future per
//! direction) puts each stream behind an `Arc` and a lock and keeps the
//! stream's slot in the caller's future as well; a terminated connection's
//! two TLS streams are over 2 KiB, so every idle connection held them
//! twice. Here they are held once, inline.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::buffer::PooledBuf;
use super::relay::{Counters, HalfError, RelayEnd, StopOrIdle};

/// Relays between `client` and `upstream` until both directions have
/// ended, one side fails, nothing moves for `idle`, or `stop` resolves. An
/// EOF read from one side shuts down the other side's write half (for TLS:
/// a close_notify, then FIN) while the opposite direction keeps flowing. A
/// read that ends without the peer's TLS close_notify (`UnexpectedEof`,
/// what most HTTP clients do) is taken as an EOF like any other.
///
/// Not an `async fn`, so that the streams are moved straight into the
/// returned future rather than kept in an argument slot as well.
pub fn relay_streams<C, U, F>(
    client: C,
    upstream: U,
    idle: Duration,
    stop: F,
    counters: &Counters,
) -> StreamRelay<'_, C, U, F>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = ()>,
{
    StreamRelay {
        client,
        upstream,
        up: Half::default(),
        down: Half::default(),
        end: StopOrIdle::new(stop, idle),
        counters,
    }
}

pin_project_lite::pin_project! {
    /// See [`relay_streams`].
    pub struct StreamRelay<'a, C, U, F> {
        client: C,
        upstream: U,
        // Client to upstream.
        up: Half,
        // Upstream to client.
        down: Half,
        #[pin]
        end: StopOrIdle<F>,
        counters: &'a Counters,
    }
}

/// One direction's state.
#[derive(Default)]
struct Half {
    /// Bytes read and not yet written: the buffer, how far it is written,
    /// how much it holds. Only while a write is pending: an idle direction
    /// holds no buffer.
    pending: Option<(PooledBuf, usize, usize)>,
    state: HalfState,
}

#[derive(Default, PartialEq)]
enum HalfState {
    #[default]
    Open,
    /// EOF read; shutting the other side's write half.
    ShuttingDown,
    Done,
}

impl Half {
    /// Moves bytes from `from` to `to` until both would block (Pending),
    /// the direction ends (`Ok`), or it fails.
    fn poll_move<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        counters: &Counters,
        bytes: &std::sync::atomic::AtomicU64,
    ) -> Poll<Result<(), HalfError>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            match self.state {
                HalfState::Done => return Poll::Ready(Ok(())),
                HalfState::ShuttingDown => {
                    // Pass the EOF on; the peer may still be sending the
                    // other way. A failed shutdown ends this direction all
                    // the same.
                    let _ = ready!(Pin::new(&mut *to).poll_shutdown(cx));
                    self.state = HalfState::Done;
                    return Poll::Ready(Ok(()));
                }
                HalfState::Open => {}
            }
            if let Some((buf, written, filled)) = &mut self.pending {
                while *written < *filled {
                    let n = ready!(Pin::new(&mut *to).poll_write(cx, &buf[*written..*filled]))
                        .map_err(HalfError::Write)?;
                    if n == 0 {
                        return Poll::Ready(Err(HalfError::Write(io::ErrorKind::WriteZero.into())));
                    }
                    *written += n;
                }
                ready!(Pin::new(&mut *to).poll_flush(cx)).map_err(HalfError::Write)?;
                bytes.fetch_add(*filled as u64, Ordering::Relaxed);
                self.pending = None;
            }
            // A buffer lent for this read attempt only: back to the pool
            // if the read would block.
            let mut buf = PooledBuf::take();
            let mut rb = ReadBuf::new(&mut buf);
            match Pin::new(&mut *from).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.state = HalfState::ShuttingDown;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(HalfError::Read(e))),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        self.state = HalfState::ShuttingDown;
                    } else {
                        counters.touch();
                        self.pending = Some((buf, 0, n));
                    }
                }
            }
        }
    }
}

impl<C, U, F> Future for StreamRelay<'_, C, U, F>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = ()>,
{
    type Output = RelayEnd;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<RelayEnd> {
        let this = self.project();
        let counters = *this.counters;
        if let Poll::Ready(Err(e)) =
            this.up
                .poll_move(cx, this.client, this.upstream, counters, &counters.up)
        {
            return Poll::Ready(e.end(true));
        }
        if let Poll::Ready(Err(e)) =
            this.down
                .poll_move(cx, this.upstream, this.client, counters, &counters.down)
        {
            return Poll::Ready(e.end(false));
        }
        if this.up.state == HalfState::Done && this.down.state == HalfState::Done {
            return Poll::Ready(RelayEnd::Closed);
        }
        this.end.poll_end(cx, counters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;

    #[tokio::test]
    async fn passes_eof_one_way_and_keeps_the_other() {
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

    /// More than the pipe holds, both ways at once: writes that would block
    /// keep their bytes and finish later, byte-exact.
    #[tokio::test]
    async fn moves_more_than_a_buffer_both_ways_at_once() {
        const TOTAL: usize = 1024 * 1024;
        let (mut client, client_side) = duplex(4096);
        let (upstream_side, mut upstream) = duplex(4096);
        let counters = Counters::default();
        let relay = relay_streams(
            client_side,
            upstream_side,
            Duration::from_secs(60),
            std::future::pending(),
            &counters,
        );
        let pattern = |i: usize| (i % 251) as u8;
        let data: Vec<u8> = (0..TOTAL).map(pattern).collect();
        let peers = async {
            let (mut crd, mut cwr) = tokio::io::split(&mut client);
            let (mut urd, mut uwr) = tokio::io::split(&mut upstream);
            let send_up = async {
                cwr.write_all(&data).await.unwrap();
                cwr.shutdown().await.unwrap();
            };
            let send_down = async {
                uwr.write_all(&data).await.unwrap();
                uwr.shutdown().await.unwrap();
            };
            let recv_up = async {
                let mut got = Vec::new();
                urd.read_to_end(&mut got).await.unwrap();
                got
            };
            let recv_down = async {
                let mut got = Vec::new();
                crd.read_to_end(&mut got).await.unwrap();
                got
            };
            let ((), (), up, down) = tokio::join!(send_up, send_down, recv_up, recv_down);
            assert!(up == data, "client to upstream bytes differ");
            assert!(down == data, "upstream to client bytes differ");
        };
        let (end, ()) = tokio::join!(relay, peers);
        assert!(matches!(end, RelayEnd::Closed), "{end:?}");
        assert_eq!(counters.up.load(Ordering::Relaxed), TOTAL as u64);
        assert_eq!(counters.down.load(Ordering::Relaxed), TOTAL as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn ends_when_idle_or_stopped() {
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

    /// What an idle terminated connection holds is mostly this future: the
    /// two streams, held once, and little else.
    #[test]
    fn holds_the_streams_once() {
        type Tls = crate::tls::stream::ServerStream<tokio::net::TcpStream>;
        type Up = crate::tls::stream::ClientStream<tokio::net::TcpStream>;
        type R = StreamRelay<'static, Tls, Up, std::future::Pending<()>>;
        let streams = std::mem::size_of::<Tls>() + std::mem::size_of::<Up>();
        let size = std::mem::size_of::<R>();
        assert!(
            size <= streams + 400,
            "stream relay is {size} bytes for {streams} of streams"
        );
    }
}
