//! Reads a connection's ClientHello under one deadline, keeping every byte
//! read so that the next stage (the upstream, or rustls) can be handed the
//! exact same bytes: read, then replay; never peek in a loop.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::client_hello::{parse, ClientHello, Parse};

/// First read size: one read takes in all of a typical hello, including a
/// ~2 KB post-quantum browser hello, without growing.
const INITIAL_BUF: usize = 2048;

/// Why no ClientHello came out of a connection.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("no whole ClientHello before the deadline")]
    Timeout,
    #[error("not a TLS handshake")]
    NotTls,
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    #[error("ClientHello larger than the configured cap")]
    TooLarge,
    #[error("client closed before a whole ClientHello")]
    Closed,
    #[error("read error: {0}")]
    Io(#[from] io::Error),
}

/// The hello and all the bytes it came in (plus any that followed it in the
/// same reads), to be replayed unchanged.
#[derive(Debug)]
pub struct Detected {
    pub hello: ClientHello,
    pub bytes: Vec<u8>,
}

/// Reads until a whole ClientHello is in, at most `max` bytes, all before
/// `deadline` (one deadline for the whole hello, not per read, so a client
/// trickling bytes cannot stretch it).
pub async fn read_client_hello<S>(
    stream: &mut S,
    max: usize,
    deadline: Instant,
) -> Result<Detected, DetectError>
where
    S: AsyncRead + Unpin,
{
    match tokio::time::timeout_at(deadline, read_until_hello(stream, max)).await {
        Ok(r) => r,
        Err(_) => Err(DetectError::Timeout),
    }
}

async fn read_until_hello<S>(stream: &mut S, max: usize) -> Result<Detected, DetectError>
where
    S: AsyncRead + Unpin,
{
    let mut buf = vec![0u8; INITIAL_BUF.min(max)];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            // The parser said NeedMore with a full buffer: grow, up to the cap
            // (the parser answers TooLarge before the cap would be exceeded).
            if buf.len() >= max {
                return Err(DetectError::TooLarge);
            }
            buf.resize((buf.len() * 2).min(max), 0);
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(DetectError::Closed);
        }
        filled += n;
        match parse(&buf[..filled], max) {
            Parse::Complete(hello) => {
                buf.truncate(filled);
                return Ok(Detected { hello, bytes: buf });
            }
            Parse::NeedMore => continue,
            Parse::NotTls => return Err(DetectError::NotTls),
            Parse::Malformed(why) => return Err(DetectError::Malformed(why)),
            Parse::TooLarge => return Err(DetectError::TooLarge),
        }
    }
}
