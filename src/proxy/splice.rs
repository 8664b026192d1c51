//! Zero-copy relay for passthrough on Linux: bytes go socket → pipe →
//! socket with splice(2), never through user space. The primitives only:
//! the relay's direction state machine (`relay::Dir`) drives them.
//!
//! The pipe is borrowed from a per-thread pool only while a chunk is in
//! flight and returned empty, exactly like the copy relay's buffers, so an
//! idle connection holds no pipe: its cost stays two sockets and a small
//! future. A pipe's pages are allocated by the kernel only while it holds
//! data; an empty pooled pipe costs two fds and its inode.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{splice, OFlag, SpliceFFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Most bytes moved per splice: the default pipe capacity (16 pages).
pub const CHUNK: usize = 64 * 1024;

const POOLED_PER_THREAD: usize = 64;

thread_local! {
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// Chunks copied through user space because no pipe could be had
/// (`pipe2(2)` failed: the process is out of descriptors, or an
/// unprivileged user is over `fs.pipe-user-pages-hard`). Process-wide: one
/// proxy runs per process; exported as
/// `mse_proxy_splice_pipe_failures_total`.
static PIPE_FAILURES: AtomicU64 = AtomicU64::new(0);

/// Chunks copied because no pipe could be had, since the process started.
pub fn pipe_failures() -> u64 {
    PIPE_FAILURES.load(Ordering::Relaxed)
}

/// Counts a failed `pipe2(2)`; logs the first and then at every power of
/// two, so that a process out of descriptors says so without flooding.
pub fn pipe_failed(e: &io::Error) {
    let n = PIPE_FAILURES.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        tracing::warn!(error = %e, failures = n, "no pipe for splice: copying through user space");
    }
}

/// A pipe pair: read end, write end.
struct Pipe(OwnedFd, OwnedFd);

fn new_pipe() -> io::Result<Pipe> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    Ok(Pipe(r, w))
}

/// A pipe on loan; back to the pool on drop only if known to be empty.
/// Held by a relay direction only while a chunk is in the pipe.
pub struct Loan {
    pipe: Option<Pipe>,
    empty: bool,
}

impl Loan {
    pub fn take() -> io::Result<Loan> {
        let pipe = match PIPES.with(|p| p.borrow_mut().pop()) {
            Some(p) => p,
            None => new_pipe()?,
        };
        Ok(Loan {
            pipe: Some(pipe),
            empty: true,
        })
    }

    fn pipe(&self) -> io::Result<&Pipe> {
        self.pipe
            .as_ref()
            .ok_or_else(|| io::ErrorKind::Other.into())
    }

    /// Moves up to [`CHUNK`] bytes from `from` into the pipe: `Ok(0)` at
    /// EOF, `WouldBlock` (readiness cleared) when nothing is there.
    pub fn fill(&mut self, from: &TcpStream) -> io::Result<usize> {
        let w = self.pipe()?.1.as_fd();
        let n = from.try_io(Interest::READABLE, || {
            splice(from.as_fd(), None, w, None, CHUNK, FLAGS).map_err(nix_io)
        })?;
        if n > 0 {
            self.empty = false;
        }
        Ok(n)
    }

    /// Moves up to `left` of the bytes in the pipe to `to`; `WouldBlock`
    /// (readiness cleared) when `to` takes none.
    pub fn flush(&mut self, to: &TcpStream, left: usize) -> io::Result<usize> {
        let r = self.pipe()?.0.as_fd();
        to.try_io(Interest::WRITABLE, || {
            splice(r, None, to.as_fd(), None, left, FLAGS).map_err(nix_io)
        })
    }

    /// The pipe is known to be empty again (everything written): it goes
    /// back to the pool when dropped.
    pub fn emptied(&mut self) {
        self.empty = true;
    }

    /// Reads the `left` bytes still in the pipe back into user space (a
    /// pause in the middle of a chunk), leaving the pipe empty for the pool.
    pub fn drain(&mut self, left: usize) -> io::Result<Vec<u8>> {
        let r = self.pipe()?.0.as_fd();
        let mut rest = vec![0u8; left];
        let mut got = 0;
        while got < left {
            match nix::unistd::read(r, &mut rest[got..]) {
                Ok(0) => break,
                Ok(m) => got += m,
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(nix_io(e)),
            }
        }
        rest.truncate(got);
        self.empty = got == left;
        Ok(rest)
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

const FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_MOVE.union(SpliceFFlags::SPLICE_F_NONBLOCK);

fn nix_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}
