//! The upgrade socket: a Unix SOCK_SEQPACKET socket (records keep their
//! bounds, and the descriptors ride on the record that names them),
//! through rustix's safe `sendmsg`/`recvmsg` with SCM_RIGHTS, so no
//! `unsafe` here. Blocking, with timeouts: both sides use it from a
//! thread of their own, never from an async worker.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use rustix::net::{
    self, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

use super::protocol::{self, Msg, MAX_RECORD};

/// Most descriptors one record carries: every listening socket, one per
/// worker per listener plus the admin listener (the config keeps them
/// under this, Linux's own limit for one message).
const MAX_FDS: usize = crate::config::bounds::MAX_LISTENING_SOCKETS;

fn io_err(e: rustix::io::Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.raw_os_error())
}

fn seqpacket() -> std::io::Result<OwnedFd> {
    net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(io_err)
}

/// The running process's end, where the new process and `mse-proxy
/// upgrade` connect.
#[derive(Debug)]
pub struct Listener(OwnedFd);

impl Listener {
    /// Binds `path` (a stale socket file there is replaced), mode 0600, and
    /// only then listens: nobody but the proxy's user can connect, not even
    /// in the instant between bind and chmod.
    pub fn bind(path: &Path) -> std::io::Result<Listener> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let fd = seqpacket()?;
        let addr = SocketAddrUnix::new(path).map_err(io_err)?;
        net::bind(&fd, &addr).map_err(io_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        net::listen(&fd, 8).map_err(io_err)?;
        Ok(Listener(fd))
    }

    /// Waits for the next peer.
    ///
    /// The wait is in poll(2), not in accept(2): Linux takes the new
    /// descriptor's number before a blocking accept sleeps, so a thread
    /// waiting there holds a number nobody sees in `/proc/self/fd`, for as
    /// long as no upgrade comes. At the descriptor limit, that is the one a
    /// connection's upstream socket needed.
    pub fn accept(&self) -> std::io::Result<Channel> {
        let mut ready = [rustix::event::PollFd::new(
            &self.0,
            rustix::event::PollFlags::IN,
        )];
        loop {
            match rustix::event::poll(&mut ready, None) {
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(io_err(e)),
            }
        }
        let fd = net::accept_with(&self.0, SocketFlags::CLOEXEC).map_err(io_err)?;
        Ok(Channel(fd))
    }
}

/// One connection on the upgrade socket.
#[derive(Debug)]
pub struct Channel(OwnedFd);

impl Channel {
    pub fn connect(path: &Path) -> std::io::Result<Channel> {
        let fd = seqpacket()?;
        let addr = SocketAddrUnix::new(path).map_err(io_err)?;
        net::connect(&fd, &addr).map_err(io_err)?;
        Ok(Channel(fd))
    }

    /// How long a receive waits (`None`: for ever).
    pub fn set_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        net::sockopt::set_socket_timeout(&self.0, net::sockopt::Timeout::Recv, t)
            .map_err(io_err)?;
        net::sockopt::set_socket_timeout(&self.0, net::sockopt::Timeout::Send, t).map_err(io_err)
    }

    /// Sends one record: `msg`, then `tail`, with `fds` attached.
    pub fn send(&self, msg: &Msg, tail: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
        let record = protocol::encode(msg, tail);
        if record.len() > MAX_RECORD {
            return Err(std::io::Error::other("record too large"));
        }
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(std::io::Error::other("descriptors do not fit"));
        }
        let n = net::sendmsg(
            &self.0,
            &[IoSlice::new(&record)],
            &mut control,
            SendFlags::NOSIGNAL,
        )
        .map_err(io_err)?;
        if n != record.len() {
            return Err(std::io::Error::other("record cut short"));
        }
        Ok(())
    }

    /// Receives one record: its message, tail and descriptors. An orderly
    /// close of the peer is `UnexpectedEof`.
    pub fn recv(&self) -> std::io::Result<(Msg, Vec<u8>, Vec<OwnedFd>)> {
        let mut buf = vec![0u8; MAX_RECORD];
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = net::recvmsg(
            &self.0,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(io_err)?;
        // Descriptors first: whatever happens next, they are owned (and
        // closed on drop), never leaked.
        let mut fds = Vec::new();
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(list) = m {
                fds.extend(list);
            }
        }
        if got.bytes == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if got
            .flags
            .intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC)
        {
            return Err(std::io::Error::other("record or descriptors truncated"));
        }
        let (msg, tail) = protocol::decode(&buf[..got.bytes]).map_err(std::io::Error::other)?;
        if fds.len() != protocol::fd_count(&msg) {
            return Err(std::io::Error::other(format!(
                "{} descriptors with a message that names {}",
                fds.len(),
                protocol::fd_count(&msg)
            )));
        }
        Ok((msg, tail.to_vec(), fds))
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
