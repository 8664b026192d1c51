//! Both-way relay between two TCP sockets with half-close, an idle timeout
//! and an external stop signal.
//!
//! Each direction waits for readiness first and borrows a pooled buffer only
//! once bytes are there, so an idle connection costs its two sockets and a
//! small future, nothing more.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
pub async fn relay<F>(
    client: &TcpStream,
    upstream: &TcpStream,
    idle: Duration,
    stop: F,
    counters: &Counters,
) -> RelayEnd
where
    F: Future<Output = ()>,
{
    let activity = Activity {
        base: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let up = copy_half(client, upstream, &counters.up, &activity);
    let down = copy_half(upstream, client, &counters.down, &activity);
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
) -> Result<(), HalfError> {
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
