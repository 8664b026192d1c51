//! A TLS connection over a byte stream, built on rustls's unbuffered API,
//! that holds no buffer while it waits: the terminate path's two TLS ends.
//!
//! rustls's buffered connections (what tokio-rustls wraps) keep a read
//! buffer of at least 4 KiB each for their whole life, so an idle
//! terminated connection, two TLS connections, held 8 KiB of buffers doing
//! nothing. Here the ciphertext buffers ([`RecordBuf`]) are taken from a
//! pool when bytes come and given back as soon as they are empty; what an
//! idle connection keeps is the rustls state (keys, the session) alone.
//!
//! The stream is driven from `poll_read`, `poll_write`, `poll_flush` and
//! `poll_shutdown`, each running rustls's state machine ([`TlsStream::step`])
//! until it needs I/O, so the relay (`proxy/stream_relay.rs`) uses it as any
//! `AsyncRead + AsyncWrite`. Rules it keeps:
//!
//! - Ciphertext waiting in the outgoing buffer is written before anything
//!   more is encrypted (`poll_write` flushes first); what rustls produces
//!   while reading (a NewSessionTicket answer, a KeyUpdate) is sent on the
//!   next read, write or flush.
//! - A decrypted record larger than the reader's buffer is kept, and so is
//!   one decrypted while writing; the next read returns it first.
//! - EOF: the peer's close_notify reads as EOF; a TCP EOF without it is
//!   `UnexpectedEof` (as rustls's own reader says), which the relay takes as
//!   EOF too. Shutdown sends close_notify, then shuts the TCP write half.
//! - A TLS error is an `InvalidData` error carrying the `rustls::Error`;
//!   the alert rustls queued for the peer, if any, is sent if the socket
//!   takes it at once.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::pki_types::ServerName;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use rustls::{ClientConfig, CommonState, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::record_buf::RecordBuf;

/// The most plaintext one record carries.
const MAX_FRAGMENT: usize = 16 * 1024;

/// Room asked for before rustls encodes a record it made (alerts, handshake
/// messages are smaller; a larger one makes the buffer grow to fit).
const RECORD_ROOM: usize = MAX_FRAGMENT + 512;

/// The client or the server side of an unbuffered rustls connection.
pub trait Side {
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn common(&self) -> &CommonState;
}

impl Side for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ServerConnectionData> {
        self.process_tls_records(incoming)
    }
    fn common(&self) -> &CommonState {
        self
    }
}

impl Side for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ClientConnectionData> {
        self.process_tls_records(incoming)
    }
    fn common(&self) -> &CommonState {
        self
    }
}

/// A terminated client's connection: the server side of TLS.
pub type ServerStream<S> = TlsStream<UnbufferedServerConnection, S>;
/// The connection to a TLS backend: the client side.
pub type ClientStream<S> = TlsStream<UnbufferedClientConnection, S>;

/// See the module documentation.
pub struct TlsStream<C, S> {
    io: S,
    conn: C,
    /// Ciphertext read and not yet processed (or a handshake message
    /// rustls holds until its last fragment comes).
    incoming: RecordBuf,
    /// Ciphertext made and not yet written.
    outgoing: RecordBuf,
    /// Plaintext decrypted and not yet read: the rest of a record the
    /// reader had no room for, or records decrypted while writing.
    kept: Option<(Vec<u8>, usize)>,
    /// The peer's close_notify came, or the socket's EOF.
    read_done: bool,
    /// Our close_notify is queued; nothing more may be written.
    close_queued: bool,
}

impl<C, S> std::fmt::Debug for TlsStream<C, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("incoming", &self.incoming)
            .field("outgoing", &self.outgoing)
            .field("read_done", &self.read_done)
            .field("close_queued", &self.close_queued)
            .finish_non_exhaustive()
    }
}

/// What the caller of [`TlsStream::step`] is after.
enum Want<'a, 'b> {
    /// The handshake's end.
    Handshake,
    /// Plaintext, into `buf`, which held `.1` bytes before this read.
    Read(&'a mut ReadBuf<'b>, usize),
    /// To encrypt `.0`, of which `.1` bytes are done.
    Write(&'a [u8], usize),
    /// To queue close_notify.
    Close,
}

/// What one step of the state machine came to.
#[derive(Debug, PartialEq)]
enum Step {
    /// rustls moved on (a message processed, a record encoded): again.
    Again,
    /// What was wanted is done (plaintext read, data encrypted, the
    /// handshake finished, close_notify queued).
    Done,
    /// Nothing to do until more ciphertext is read.
    NeedRead,
    /// No more plaintext will come: the peer's close_notify, or both sides'.
    Eof,
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn encrypt_error(e: EncryptError) -> io::Error {
    io::Error::other(e.to_string())
}

impl<S: AsyncRead + AsyncWrite + Unpin> ServerStream<S> {
    /// Completes a server handshake with `io`, whose first bytes, `already_read`
    /// (the ClientHello the detector read), are processed before any more.
    /// They are copied into a record buffer, and their own memory freed
    /// before the handshake waits on the peer.
    pub async fn accept(
        config: Arc<ServerConfig>,
        io: S,
        already_read: Vec<u8>,
    ) -> io::Result<Self> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let incoming = RecordBuf::from_bytes(&already_read);
        drop(already_read);
        let mut s = Self::new(conn, io, incoming);
        poll_fn(|cx| s.poll_handshake(cx)).await?;
        Ok(s)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientStream<S> {
    /// Completes a client handshake with `io`, offering `alpn`. Tickets the
    /// server sends go to the config's resumption store.
    pub async fn connect(
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        alpn: Vec<Vec<u8>>,
        io: S,
    ) -> io::Result<Self> {
        let conn =
            UnbufferedClientConnection::new_with_alpn(config, name, alpn).map_err(tls_error)?;
        let mut s = Self::new(conn, io, RecordBuf::default());
        poll_fn(|cx| s.poll_handshake(cx)).await?;
        Ok(s)
    }
}

impl<C: Side, S: AsyncRead + AsyncWrite + Unpin> TlsStream<C, S> {
    fn new(conn: C, io: S, incoming: RecordBuf) -> Self {
        Self {
            io,
            conn,
            incoming,
            outgoing: RecordBuf::default(),
            kept: None,
            read_done: false,
            close_queued: false,
        }
    }

    /// The protocol the handshake selected.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.common().alpn_protocol()
    }

    /// rustls's state of the connection (version, suite, peer certificates).
    pub fn connection(&self) -> &C {
        &self.conn
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Whether a ciphertext buffer is held (for tests: an idle stream holds none).
    pub fn holds_buffers(&self) -> bool {
        self.incoming.holds_memory() || self.outgoing.holds_memory()
    }

    /// One call into rustls and what its answer asks for, as far as it can
    /// be done without I/O: records it made are encoded into `outgoing`,
    /// plaintext goes to the reader or is kept.
    fn step(&mut self, want: &mut Want<'_, '_>) -> io::Result<Step> {
        let UnbufferedStatus { mut discard, state } = self.conn.process(self.incoming.filled());
        let step = match state {
            Ok(state) => on_state(
                state,
                want,
                &mut self.outgoing,
                &mut self.kept,
                &mut self.read_done,
                &mut discard,
            ),
            Err(e) => Err(tls_error(e)),
        };
        // Before rustls is called again, whatever the outcome.
        self.incoming.consume(discard);
        match step? {
            // rustls may send application data before the handshake is
            // over (a TLS 1.3 server, before the client's Finished): the
            // handshake still waits for the peer.
            Step::Done
                if matches!(want, Want::Handshake) && self.conn.common().is_handshaking() =>
            {
                Ok(Step::NeedRead)
            }
            step => Ok(step),
        }
    }

    /// After rustls failed: the alert it queued for the peer goes out if the
    /// socket takes it now; the connection is over either way.
    fn fail(&mut self, cx: &mut Context<'_>, e: io::Error) -> io::Error {
        let _ = self.step(&mut Want::Close);
        if !self.outgoing.is_empty() {
            if let Poll::Ready(Ok(n)) =
                Pin::new(&mut self.io).poll_write(cx, self.outgoing.filled())
            {
                self.outgoing.consume(n.min(self.outgoing.len()));
            }
        }
        e
    }

    /// Writes out `outgoing`; its buffer goes back once it is empty.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.outgoing.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, self.outgoing.filled()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing.consume(n);
        }
        self.outgoing.release();
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Reads more ciphertext: `false` at EOF. An empty buffer goes back
    /// while the read waits.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if !self.incoming.read_room() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS message too large",
            )));
        }
        let mut rb = ReadBuf::new(self.incoming.spare());
        let res = Pin::new(&mut self.io).poll_read(cx, &mut rb);
        let n = rb.filled().len();
        self.incoming.commit(n);
        match res {
            Poll::Pending => {
                self.incoming.release();
                Poll::Pending
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => Poll::Ready(Ok(n > 0)),
        }
    }

    /// Drives the handshake to its end, and writes what it made.
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.step(&mut Want::Handshake) {
                Err(e) => return Poll::Ready(Err(self.fail(cx, e))),
                Ok(Step::Again) => {}
                Ok(Step::Done | Step::Eof) => {
                    ready!(self.poll_flush_out(cx))?;
                    self.incoming.release();
                    return Poll::Ready(Ok(()));
                }
                Ok(Step::NeedRead) => {
                    ready!(self.poll_flush_out(cx))?;
                    if !ready!(self.poll_fill(cx))? {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "EOF during the TLS handshake",
                        )));
                    }
                }
            }
        }
    }

    /// Sends what rustls made while reading, if the socket takes it now.
    fn flush_in_passing(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.outgoing.is_empty() {
            return Ok(());
        }
        match self.poll_flush_out(cx) {
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

impl<C: Side + Unpin, S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<C, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        this.flush_in_passing(cx)?;
        if let Some((bytes, pos)) = &mut this.kept {
            let n = (bytes.len() - *pos).min(buf.remaining());
            buf.put_slice(&bytes[*pos..*pos + n]);
            *pos += n;
            if *pos == bytes.len() {
                this.kept = None;
            }
            return Poll::Ready(Ok(()));
        }
        if this.read_done {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        loop {
            match this.step(&mut Want::Read(buf, before)) {
                Err(e) => return Poll::Ready(Err(this.fail(cx, e))),
                Ok(Step::Again) => {}
                Ok(Step::Done | Step::Eof) => return Poll::Ready(Ok(())),
                Ok(Step::NeedRead) => {
                    if buf.filled().len() > before {
                        return Poll::Ready(Ok(()));
                    }
                    this.flush_in_passing(cx)?;
                    if !ready!(this.poll_fill(cx))? {
                        this.read_done = true;
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "peer closed connection without sending TLS close_notify",
                        )));
                    }
                }
            }
        }
    }
}

impl<C: Side + Unpin, S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<C, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // What was encrypted before goes first, whole.
        ready!(this.poll_flush_out(cx))?;
        if this.close_queued {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let mut want = Want::Write(data, 0);
        loop {
            match this.step(&mut want) {
                Err(e) => return Poll::Ready(Err(this.fail(cx, e))),
                Ok(Step::Again) => {}
                Ok(_) => break,
            }
        }
        let Want::Write(_, done) = want else {
            unreachable!()
        };
        // On its way; what the socket does not take now waits for the
        // next write or flush.
        this.flush_in_passing(cx)?;
        Poll::Ready(Ok(done))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_out(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_queued {
            ready!(this.poll_flush_out(cx))?;
            this.close_queued = true;
            // A connection rustls has failed has no close_notify to send:
            // the TCP shutdown alone, then.
            while let Ok(Step::Again) = this.step(&mut Want::Close) {}
        }
        ready!(this.poll_flush_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// [`TlsStream::step`]'s handling of one state rustls answered with.
fn on_state<D>(
    state: ConnectionState<'_, '_, D>,
    want: &mut Want<'_, '_>,
    outgoing: &mut RecordBuf,
    kept: &mut Option<(Vec<u8>, usize)>,
    read_done: &mut bool,
    discard: &mut usize,
) -> io::Result<Step> {
    Ok(match state {
        ConnectionState::ReadTraffic(mut traffic) => {
            let Some(len) = traffic.peek_len() else {
                return Ok(Step::Again);
            };
            if let Want::Read(buf, before) = want {
                if len.get() > buf.remaining() && buf.filled().len() > *before {
                    // This read has bytes already; the record waits for the next.
                    return Ok(Step::Done);
                }
            }
            let Some(record) = traffic.next_record() else {
                return Ok(Step::Again);
            };
            let record = record.map_err(tls_error)?;
            *discard += record.discard;
            let payload = record.payload;
            match want {
                Want::Read(buf, _) => {
                    let n = payload.len().min(buf.remaining());
                    buf.put_slice(&payload[..n]);
                    if n < payload.len() {
                        *kept = Some((payload[n..].to_vec(), 0));
                    }
                }
                // Not reading now: kept for the reader, so that rustls
                // gets past it.
                _ => match kept {
                    Some((bytes, pos)) => {
                        bytes.drain(..*pos);
                        *pos = 0;
                        bytes.extend_from_slice(payload);
                    }
                    None => *kept = Some((payload.to_vec(), 0)),
                },
            }
            Step::Again
        }
        ConnectionState::EncodeTlsData(mut encode) => {
            outgoing.ensure_spare(RECORD_ROOM);
            let n = match encode.encode(outgoing.spare()) {
                Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                    outgoing.ensure_spare(required_size);
                    encode.encode(outgoing.spare())
                }
                other => other,
            }
            .map_err(|e| io::Error::other(e.to_string()))?;
            outgoing.commit(n);
            Step::Again
        }
        ConnectionState::TransmitTlsData(transmit) => {
            // The bytes are in `outgoing`, which is written before anything
            // is read or encrypted after them.
            transmit.done();
            Step::Again
        }
        ConnectionState::BlockedHandshake => match want {
            Want::Handshake | Want::Read(..) => Step::NeedRead,
            Want::Write(..) | Want::Close => {
                return Err(io::Error::other(
                    "TLS connection not ready for application data",
                ))
            }
        },
        ConnectionState::WriteTraffic(mut traffic) => match want {
            Want::Handshake => Step::Done,
            Want::Read(..) => Step::NeedRead,
            Want::Write(data, done) => {
                // Whole records, as many as the buffer takes (two for a relay
                // buffer's worth); at least one.
                let mut grown = false;
                while *done < data.len() {
                    let piece = &data[*done..(*done + MAX_FRAGMENT).min(data.len())];
                    if *done == 0 {
                        outgoing.ensure_spare(RECORD_ROOM);
                    }
                    match traffic.encrypt(piece, outgoing.spare()) {
                        Ok(n) => {
                            outgoing.commit(n);
                            *done += piece.len();
                        }
                        Err(EncryptError::InsufficientSize(InsufficientSizeError {
                            required_size,
                        })) if *done == 0 && !grown => {
                            outgoing.ensure_spare(required_size);
                            grown = true;
                        }
                        Err(EncryptError::InsufficientSize(_)) if *done > 0 => break,
                        Err(e) => return Err(encrypt_error(e)),
                    }
                }
                Step::Done
            }
            Want::Close => {
                outgoing.ensure_spare(64);
                let n = match traffic.queue_close_notify(outgoing.spare()) {
                    Err(EncryptError::InsufficientSize(InsufficientSizeError {
                        required_size,
                    })) => {
                        outgoing.ensure_spare(required_size);
                        traffic.queue_close_notify(outgoing.spare())
                    }
                    other => other,
                }
                .map_err(encrypt_error)?;
                outgoing.commit(n);
                Step::Done
            }
        },
        ConnectionState::PeerClosed => {
            *read_done = true;
            match want {
                Want::Handshake => return Err(io::ErrorKind::UnexpectedEof.into()),
                Want::Read(..) => Step::Eof,
                Want::Write(..) | Want::Close => Step::Again,
            }
        }
        ConnectionState::Closed => {
            *read_done = true;
            match want {
                Want::Write(..) => return Err(io::ErrorKind::BrokenPipe.into()),
                Want::Handshake => return Err(io::ErrorKind::UnexpectedEof.into()),
                Want::Read(..) | Want::Close => Step::Eof,
            }
        }
        // Early data is never enabled in the server configs.
        _ => return Err(io::Error::other("unexpected TLS state")),
    })
}

#[cfg(test)]
mod tests;
