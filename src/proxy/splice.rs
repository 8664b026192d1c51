//! Zero-copy relay for passthrough on Linux: bytes go socket → pipe →
//! socket with splice(2), never through user space.
//!
//! The pipe is borrowed from a per-thread pool only while a chunk is in
//! flight and returned empty, exactly like the copy relay's buffers, so an
//! idle connection holds no pipe: its cost stays two sockets and a small
//! future. A pipe's pages are allocated by the kernel only while it holds
//! data; an empty pooled pipe costs two fds and its inode.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use nix::fcntl::{splice, OFlag, SpliceFFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Most bytes moved per splice: the default pipe capacity (16 pages).
pub const CHUNK: usize = 64 * 1024;

const POOLED_PER_THREAD: usize = 64;

thread_local! {
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// A pipe pair: read end, write end.
struct Pipe(OwnedFd, OwnedFd);

fn new_pipe() -> io::Result<Pipe> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    Ok(Pipe(r, w))
}

/// A pipe on loan; back to the pool on drop only if known to be empty.
struct Loan {
    pipe: Option<Pipe>,
    empty: bool,
}

impl Loan {
    fn take() -> io::Result<Loan> {
        let pipe = match PIPES.with(|p| p.borrow_mut().pop()) {
            Some(p) => p,
            None => new_pipe()?,
        };
        Ok(Loan {
            pipe: Some(pipe),
            empty: true,
        })
    }
}

impl Drop for Loan {
    fn drop(&mut self) {
        if let (Some(pipe), true) = (self.pipe.take(), self.empty) {
            PIPES.with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < POOLED_PER_THREAD {
                    p.push(pipe);
                }
            });
        }
    }
}

/// Outcome of one chunk.
pub enum Chunk {
    /// `n` bytes moved from `from` to `to`.
    Moved(usize),
    /// `from` reached EOF.
    Eof,
    /// The relay is pausing (see `relay::copy_half`): `moved` bytes went to
    /// `to`, `rest` was drained back out of the pipe, not yet written.
    Paused { moved: usize, rest: Vec<u8> },
}

/// Error side, so the caller can attribute it to client or upstream.
pub enum SpliceError {
    Read(io::Error),
    Write(io::Error),
}

fn nix_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Waits for `from` to be readable, then moves one chunk to `to` through a
/// pooled pipe, waiting for `to` as needed; stops waiting once `pausing`.
pub async fn chunk(
    from: &TcpStream,
    to: &TcpStream,
    pausing: &AtomicBool,
) -> Result<Chunk, SpliceError> {
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let paused = || pausing.load(Ordering::Relaxed);
    loop {
        // The sockets' own waker slots, not `readable()`/`writable()`
        // futures: see `relay::write_all`.
        let go = poll_fn(|cx| match paused() {
            true => Poll::Ready(Ok(false)),
            false => from.poll_read_ready(cx).map_ok(|()| true),
        })
        .await
        .map_err(SpliceError::Read)?;
        if !go {
            return Ok(Chunk::Paused {
                moved: 0,
                rest: Vec::new(),
            });
        }
        let mut loan = Loan::take().map_err(SpliceError::Read)?;
        let Some(Pipe(r, w)) = loan.pipe.as_ref() else {
            return Err(SpliceError::Read(io::ErrorKind::Other.into()));
        };
        let read = from.try_io(Interest::READABLE, || {
            splice(from.as_fd(), None, w.as_fd(), None, CHUNK, flags).map_err(nix_io)
        });
        let n = match read {
            Ok(0) => return Ok(Chunk::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(SpliceError::Read(e)),
        };
        loan.empty = false;
        let mut left = n;
        while left > 0 {
            let wrote = to.try_io(Interest::WRITABLE, || {
                splice(r.as_fd(), None, to.as_fd(), None, left, flags).map_err(nix_io)
            });
            match wrote {
                Ok(0) => return Err(SpliceError::Write(io::ErrorKind::WriteZero.into())),
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let go = poll_fn(|cx| match paused() {
                        true => Poll::Ready(Ok(false)),
                        false => to.poll_write_ready(cx).map_ok(|_| true),
                    })
                    .await
                    .map_err(SpliceError::Write)?;
                    if !go {
                        let rest = drain(r, left).map_err(SpliceError::Read)?;
                        loan.empty = true;
                        return Ok(Chunk::Paused {
                            moved: n - left,
                            rest,
                        });
                    }
                }
                Err(e) => return Err(SpliceError::Write(e)),
            }
        }
        loan.empty = true;
        return Ok(Chunk::Moved(n));
    }
}

/// Reads the `left` bytes still in a pipe back into user space (a pause
/// in the middle of a chunk), leaving the pipe empty for the pool.
fn drain(r: &OwnedFd, left: usize) -> io::Result<Vec<u8>> {
    let mut rest = vec![0u8; left];
    let mut got = 0;
    while got < left {
        match nix::unistd::read(r.as_fd(), &mut rest[got..]) {
            Ok(0) => break,
            Ok(m) => got += m,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(nix_io(e)),
        }
    }
    rest.truncate(got);
    Ok(rest)
}
