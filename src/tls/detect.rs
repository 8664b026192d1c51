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

/// Real clients send a hello in one record, rarely a few. A client splitting
/// it into hundreds of tiny records only makes every re-parse walk more
/// headers, so past this many complete records the hello is refused.
pub const MAX_HELLO_RECORDS: usize = 64;

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

/// What a PROXY-protocol listener read before the ClientHello.
#[derive(Debug)]
pub enum ProxyHeader {
    /// A whole header: the original client (`None` for LOCAL/UNKNOWN), and
    /// the bytes read past it, which start the ClientHello.
    Present(Option<std::net::SocketAddr>, Vec<u8>),
    /// The stream does not start with a header: all bytes read so far.
    Absent(Vec<u8>),
}

/// Longest PROXY header accepted (v2 TLVs included).
const MAX_PROXY_HEADER: usize = 4096;

/// Reads a PROXY protocol header (v1 or v2), if the stream starts with one,
/// under the connection's one deadline.
pub async fn read_proxy_header<S>(
    stream: &mut S,
    deadline: Instant,
) -> Result<ProxyHeader, DetectError>
where
    S: AsyncRead + Unpin,
{
    use crate::proxy::proxy_protocol::{parse, Header};
    let read = async {
        let mut buf = vec![0u8; 512];
        let mut filled = 0;
        loop {
            if filled == buf.len() {
                if buf.len() >= MAX_PROXY_HEADER {
                    return Err(DetectError::Malformed("PROXY header too long"));
                }
                buf.resize(buf.len() * 2, 0);
            }
            let n = stream.read(&mut buf[filled..]).await?;
            if n == 0 {
                return Err(DetectError::Closed);
            }
            filled += n;
            match parse(&buf[..filled]) {
                Header::NeedMore => continue,
                Header::Invalid => return Err(DetectError::Malformed("invalid PROXY header")),
                Header::Absent => {
                    buf.truncate(filled);
                    return Ok(ProxyHeader::Absent(buf));
                }
                Header::Complete { len, source } => {
                    let rest = buf[len..filled].to_vec();
                    return Ok(ProxyHeader::Present(source, rest));
                }
            }
        }
    };
    tokio::time::timeout_at(deadline, read)
        .await
        .unwrap_or(Err(DetectError::Timeout))
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
    read_client_hello_after(stream, max, deadline, Vec::new()).await
}

/// As [`read_client_hello`], for a stream whose first bytes were already
/// read (after a PROXY protocol header): `initial` holds them.
pub async fn read_client_hello_after<S>(
    stream: &mut S,
    max: usize,
    deadline: Instant,
    initial: Vec<u8>,
) -> Result<Detected, DetectError>
where
    S: AsyncRead + Unpin,
{
    match tokio::time::timeout_at(deadline, read_until_hello(stream, max, initial)).await {
        Ok(r) => r,
        Err(_) => Err(DetectError::Timeout),
    }
}

async fn read_until_hello<S>(
    stream: &mut S,
    max: usize,
    initial: Vec<u8>,
) -> Result<Detected, DetectError>
where
    S: AsyncRead + Unpin,
{
    let mut filled = initial.len();
    let mut buf = initial;
    if filled > max {
        return Err(DetectError::TooLarge);
    }
    buf.resize(INITIAL_BUF.min(max).max(filled), 0);
    // Start of the first record not yet complete, and how many came before it.
    let (mut scan, mut records) = (0usize, 0usize);
    // Bytes already in hand are parsed before any read.
    let mut pending = filled > 0;
    loop {
        if !pending && filled == buf.len() {
            // The parser said NeedMore with a full buffer: grow, up to the cap
            // (the parser answers TooLarge before the cap would be exceeded).
            if buf.len() >= max {
                return Err(DetectError::TooLarge);
            }
            buf.resize((buf.len() * 2).min(max), 0);
        }
        if !pending {
            let n = stream.read(&mut buf[filled..]).await?;
            if n == 0 {
                return Err(DetectError::Closed);
            }
            filled += n;
        }
        pending = false;
        while let Some(h) = buf[..filled].get(scan..scan + 5) {
            let end = scan + 5 + usize::from(u16::from_be_bytes([h[3], h[4]]));
            if end > filled {
                break;
            }
            scan = end;
            records += 1;
        }
        if records > MAX_HELLO_RECORDS {
            return Err(DetectError::Malformed(
                "ClientHello split into too many records",
            ));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Vec<u8> {
        include_bytes!("../../tests/data/clienthello-chromium156-pq.bin").to_vec()
    }

    /// The payload of a one-record hello re-framed into records of `size` bytes.
    fn fragmented(size: usize) -> Vec<u8> {
        let h = hello();
        let mut out = Vec::new();
        for frag in h[5..].chunks(size) {
            out.extend_from_slice(&[22, 3, 1]);
            out.extend_from_slice(&(frag.len() as u16).to_be_bytes());
            out.extend_from_slice(frag);
        }
        out
    }

    async fn detect(bytes: Vec<u8>) -> Result<Detected, DetectError> {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            // Many small writes, as a trickling client would.
            for chunk in bytes.chunks(7) {
                if client.write_all(chunk).await.is_err() {
                    return;
                }
            }
            let _ = client.shutdown().await;
        });
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        read_client_hello(&mut server, 16384, deadline).await
    }

    #[tokio::test]
    async fn a_few_records_are_fine_hundreds_are_refused() {
        let d = detect(fragmented(100)).await.unwrap();
        assert_eq!(d.hello.sni.as_deref(), Some("app.example.test"));
        assert_eq!(d.bytes.len(), d.hello.len);
        match detect(fragmented(1)).await {
            Err(DetectError::Malformed(why)) => assert!(why.contains("too many records")),
            other => panic!("1-byte records must be refused, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn eof_before_a_whole_hello_is_closed() {
        let mut h = hello();
        h.truncate(100);
        assert!(matches!(detect(h).await, Err(DetectError::Closed)));
    }

    #[tokio::test(start_paused = true)]
    async fn one_deadline_for_the_whole_hello() {
        let (_client, mut server) = tokio::io::duplex(1024);
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let r = read_client_hello(&mut server, 16384, deadline).await;
        assert!(matches!(r, Err(DetectError::Timeout)));
        assert!(Instant::now() >= deadline);
    }
}
