//! The stream against rustls's own buffered connections (through
//! tokio-rustls) over in-memory pipes, some of them tiny or trickling, so
//! that records split across reads and writes go out in pieces.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, HandshakeKind, ServerConfig};
use tokio::io::{
    duplex, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::standin::Ca;

const HOST: &str = "t.example.test";

struct Pki {
    ca: Ca,
    leaf: crate::standin::Leaf,
}

fn pki() -> Pki {
    crate::tls::install_default_provider();
    let ca = Ca::new("stream test CA").unwrap();
    let leaf = ca.issue(&[HOST]).unwrap();
    Pki { ca, leaf }
}

impl Pki {
    fn client(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        self.ca.client_config(alpn)
    }
    fn server(&self, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        self.leaf.server_config(alpn).unwrap()
    }
}

fn name() -> ServerName<'static> {
    ServerName::try_from(HOST).unwrap()
}

/// At most `limit` bytes per read and per write: every record crosses
/// several reads, every write of ours is partial.
struct Trickle<S> {
    inner: S,
    limit: usize,
}

impl<S: AsyncRead + Unpin> AsyncRead for Trickle<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let limit = self.limit.min(buf.remaining());
        let mut small = ReadBuf::new(&mut buf.initialize_unfilled()[..limit]);
        let res = Pin::new(&mut self.inner).poll_read(cx, &mut small);
        let n = small.filled().len();
        buf.advance(n);
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Trickle<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = self.limit.min(data.len());
        Pin::new(&mut self.inner).poll_write(cx, &data[..n])
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

type PeerClient = tokio_rustls::client::TlsStream<DuplexStream>;
type PeerServer = tokio_rustls::server::TlsStream<DuplexStream>;

/// Our server end against a rustls client, the first bytes the client
/// sent read ahead (as the ClientHello detector does) and handed over.
async fn our_server<S>(
    pki: &Pki,
    io: impl FnOnce(DuplexStream) -> S,
    pipe: usize,
    server_alpn: &[&[u8]],
    client_alpn: &[&[u8]],
) -> (ServerStream<S>, PeerClient)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ours, theirs) = duplex(pipe);
    let server = pki.server(server_alpn);
    let peer = TlsConnector::from(pki.client(client_alpn)).connect(name(), theirs);
    let ours = async move {
        let mut first = vec![0u8; 100];
        let n = ours.read(&mut first).await.unwrap();
        first.truncate(n);
        ServerStream::accept(server, io(ours), first).await
    };
    let (ours, peer) = tokio::join!(ours, peer);
    (ours.unwrap(), peer.unwrap())
}

/// Our client end against a rustls server.
async fn our_client<S>(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    io: impl FnOnce(DuplexStream) -> S,
    pipe: usize,
    alpn: &[&[u8]],
) -> (io::Result<ClientStream<S>>, io::Result<PeerServer>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (ours, theirs) = duplex(pipe);
    let offer = alpn.iter().map(|p| p.to_vec()).collect();
    tokio::join!(
        ClientStream::connect(client, name(), offer, io(ours)),
        TlsAcceptor::from(server).accept(theirs)
    )
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed)
        .collect::<Vec<u8>>()
}

/// Writes `data` into `w` and shuts it down while reading all of `r`,
/// both streams' halves at once.
async fn exchange<A, B>(a: A, b: B, up: &[u8], down: &[u8])
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let send_up = async {
        aw.write_all(up).await.unwrap();
        aw.shutdown().await.unwrap();
    };
    let send_down = async {
        bw.write_all(down).await.unwrap();
        bw.shutdown().await.unwrap();
    };
    let recv_up = async {
        let mut got = Vec::new();
        br.read_to_end(&mut got).await.unwrap();
        got
    };
    let recv_down = async {
        let mut got = Vec::new();
        ar.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), (), got_up, got_down) = tokio::join!(send_up, send_down, recv_up, recv_down);
    assert!(
        got_up == up,
        "a to b: {} bytes of {}",
        got_up.len(),
        up.len()
    );
    assert!(
        got_down == down,
        "b to a: {} bytes of {}",
        got_down.len(),
        down.len()
    );
}

#[tokio::test]
async fn server_side_negotiates_alpn_and_moves_a_mebibyte_both_ways() {
    let pki = pki();
    let (ours, peer) = our_server(&pki, |s| s, 64 * 1024, &[b"h2"], &[b"http/1.1", b"h2"]).await;
    assert_eq!(ours.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(peer.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    exchange(ours, peer, &pattern(1 << 20, 1), &pattern(1 << 20, 2)).await;
}

#[tokio::test]
async fn client_side_moves_a_mebibyte_both_ways() {
    let pki = pki();
    let (ours, peer) = our_client(
        pki.client(&[]),
        pki.server(&[b"http/1.1"]),
        |s| s,
        64 * 1024,
        &[b"http/1.1"],
    )
    .await;
    let (ours, peer) = (ours.unwrap(), peer.unwrap());
    assert_eq!(ours.alpn_protocol(), Some(&b"http/1.1"[..]));
    exchange(ours, peer, &pattern(1 << 20, 3), &pattern(1 << 20, 4)).await;
}

/// Seven bytes per read and per write on our side, through a 1 KiB pipe:
/// each record arrives over many reads, each write is partial, and the
/// ciphertext left over waits for the next write or flush. (The pipe holds
/// the server's session tickets, which the handshake writes before it
/// returns, as tokio-rustls's does.)
#[tokio::test]
async fn records_split_across_reads_and_partial_writes() {
    let pki = pki();
    let trickle = |inner| Trickle { inner, limit: 7 };
    let (ours, peer) = our_server(&pki, trickle, 1024, &[], &[]).await;
    exchange(ours, peer, &pattern(100_000, 5), &pattern(70_000, 6)).await;
    let (ours, peer) = our_client(pki.client(&[]), pki.server(&[]), trickle, 1024, &[]).await;
    exchange(
        ours.unwrap(),
        peer.unwrap(),
        &pattern(50_000, 7),
        &pattern(90_000, 8),
    )
    .await;
}

/// A record of 16 KiB read through a 100-byte buffer: the rest is kept
/// and comes, in order, with the next reads.
#[tokio::test]
async fn a_record_larger_than_the_read_is_kept_until_taken() {
    let pki = pki();
    let (mut ours, mut peer) = our_server(&pki, |s| s, 64 * 1024, &[], &[]).await;
    let data = pattern(16 * 1024, 9);
    peer.write_all(&data).await.unwrap();
    peer.flush().await.unwrap();
    let mut got = Vec::new();
    let mut small = [0u8; 100];
    while got.len() < data.len() {
        let n = ours.read(&mut small).await.unwrap();
        assert!(n > 0 && n <= 100);
        got.extend_from_slice(&small[..n]);
    }
    assert!(got == data);
}

/// The peer updates its keys and asks for ours to change too, repeatedly,
/// while data moves: on both our sides, the answer goes out before our
/// next data (rustls encodes it while we read or write).
#[tokio::test]
async fn key_updates_from_the_peer_on_both_sides() {
    let pki = pki();
    let (mut ours, mut peer) = our_server(&pki, |s| s, 64 * 1024, &[], &[]).await;
    for round in 0..5u8 {
        peer.get_mut().1.refresh_traffic_keys().unwrap();
        let msg = pattern(3000, round);
        peer.write_all(&msg).await.unwrap();
        peer.flush().await.unwrap();
        let mut got = vec![0u8; msg.len()];
        ours.read_exact(&mut got).await.unwrap();
        assert!(got == msg);
        ours.write_all(&msg).await.unwrap();
        ours.flush().await.unwrap();
        peer.read_exact(&mut got).await.unwrap();
        assert!(got == msg);
    }

    let (ours, peer) = our_client(pki.client(&[]), pki.server(&[]), |s| s, 64 * 1024, &[]).await;
    let (mut ours, mut peer) = (ours.unwrap(), peer.unwrap());
    for round in 0..5u8 {
        peer.get_mut().1.refresh_traffic_keys().unwrap();
        let msg = pattern(5000, round);
        // The peer's update reaches us while we write, before we read it.
        ours.write_all(&msg).await.unwrap();
        ours.flush().await.unwrap();
        peer.write_all(&msg).await.unwrap();
        peer.flush().await.unwrap();
        let mut got = vec![0u8; msg.len()];
        peer.read_exact(&mut got).await.unwrap();
        assert!(got == msg);
        ours.read_exact(&mut got).await.unwrap();
        assert!(got == msg);
    }
}

/// The peer's close_notify reads as EOF; a TCP EOF without one is
/// `UnexpectedEof` (which the relay takes as EOF too); our shutdown sends
/// close_notify, which the peer reads as EOF.
#[tokio::test]
async fn close_notify_and_a_bare_eof() {
    let pki = pki();
    let (mut ours, mut peer) = our_server(&pki, |s| s, 4096, &[], &[]).await;
    peer.write_all(b"last").await.unwrap();
    peer.shutdown().await.unwrap();
    let mut got = Vec::new();
    ours.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"last");
    // The other direction is still open after the peer's close_notify.
    ours.write_all(b"reply").await.unwrap();
    ours.shutdown().await.unwrap();
    let mut back = Vec::new();
    peer.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"reply");

    let (mut ours, mut peer) = our_server(&pki, |s| s, 4096, &[], &[]).await;
    peer.write_all(b"cut").await.unwrap();
    peer.flush().await.unwrap();
    peer.get_mut().0.shutdown().await.unwrap();
    let mut got = [0u8; 3];
    ours.read_exact(&mut got).await.unwrap();
    let e = ours.read(&mut [0u8; 10]).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(
        ours.read(&mut [0u8; 10]).await.unwrap(),
        0,
        "EOF from then on"
    );
}

/// Garbage where a record should be: an `InvalidData` error carrying
/// rustls's, never a panic or a spin; a backend with no common protocol:
/// its alert, as rustls's error, in the handshake's error.
#[tokio::test]
async fn tls_errors_and_the_peers_alert() {
    let pki = pki();
    let (mut ours, mut peer) = our_server(&pki, |s| s, 4096, &[], &[]).await;
    peer.get_mut()
        .0
        .write_all(&[23, 3, 3, 0, 40])
        .await
        .unwrap();
    peer.get_mut().0.write_all(&[0xee; 40]).await.unwrap();
    let e = ours.read(&mut [0u8; 10]).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e
        .get_ref()
        .unwrap()
        .downcast_ref::<rustls::Error>()
        .is_some());
    // The alert rustls queued reached the peer.
    let e = peer.read(&mut [0u8; 10]).await.unwrap_err();
    assert!(e.to_string().contains("alert"), "{e}");

    let (ours, _) = our_client(pki.client(&[]), pki.server(&[b"h2"]), |s| s, 4096, &[b"x"]).await;
    let e = ours.unwrap_err();
    let alert = rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol);
    assert_eq!(
        e.get_ref().unwrap().downcast_ref::<rustls::Error>(),
        Some(&alert)
    );
}

/// A second handshake resumes, on both sides: the server's session state
/// comes from its config, the client's ticket (sent after the handshake,
/// taken by our reads) from its config's store.
#[tokio::test]
async fn sessions_resume_on_both_sides() {
    let pki = pki();
    let server = pki.server(&[]);
    let client = pki.client(&[]);
    for round in 0..2 {
        let (ours, theirs) = duplex(64 * 1024);
        let peer = TlsConnector::from(Arc::clone(&client)).connect(name(), theirs);
        let ours = ServerStream::accept(Arc::clone(&server), ours, Vec::new());
        let (ours, peer) = tokio::join!(ours, peer);
        let (ours, mut peer) = (ours.unwrap(), peer.unwrap());
        let kind = ours.connection().handshake_kind();
        exchange(ours, &mut peer, b"ping", b"pong").await;
        let want = if round == 0 {
            HandshakeKind::Full
        } else {
            HandshakeKind::Resumed
        };
        assert_eq!(kind, Some(want), "server side, round {round}");
    }
    // A client that has not met this server yet.
    let client = pki.client(&[]);
    for round in 0..2 {
        let (ours, peer) = our_client(
            Arc::clone(&client),
            Arc::clone(&server),
            |s| s,
            64 * 1024,
            &[],
        )
        .await;
        let (ours, peer) = (ours.unwrap(), peer.unwrap());
        let kind = ours.connection().handshake_kind();
        exchange(ours, peer, b"ping", b"pong").await;
        let want = if round == 0 {
            HandshakeKind::Full
        } else {
            HandshakeKind::Resumed
        };
        assert_eq!(kind, Some(want), "client side, round {round}");
    }
}

/// Between bursts, a stream waiting for its peer holds no ciphertext
/// buffer: both went back to the pool.
#[tokio::test]
async fn an_idle_stream_holds_no_buffer() {
    let pki = pki();
    let (mut ours, mut peer) = our_server(&pki, |s| s, 64 * 1024, &[], &[]).await;
    assert!(!ours.holds_buffers(), "after the handshake");
    for _ in 0..3 {
        peer.write_all(&pattern(40_000, 1)).await.unwrap();
        peer.flush().await.unwrap();
        let mut got = vec![0u8; 40_000];
        ours.read_exact(&mut got).await.unwrap();
        ours.write_all(&got).await.unwrap();
        ours.flush().await.unwrap();
        peer.read_exact(&mut got).await.unwrap();
        // A read that waits gives its buffer back.
        let waited =
            tokio::time::timeout(Duration::from_millis(20), ours.read(&mut [0u8; 64])).await;
        assert!(waited.is_err());
        assert!(!ours.holds_buffers(), "idle: {ours:?}");
    }
}

/// What the relay holds for one terminated connection is its two streams
/// inline: rustls's state, the socket, a few words of buffer cursors.
/// (tokio-rustls's streams are about the same size inline; what they held
/// beyond it, their buffers, is what this stream gives back.)
#[test]
fn the_streams_stay_small() {
    let server = std::mem::size_of::<ServerStream<tokio::net::TcpStream>>();
    let client = std::mem::size_of::<ClientStream<tokio::net::TcpStream>>();
    assert!(server <= 1_300, "server stream is {server} bytes");
    assert!(client <= 1_200, "client stream is {client} bytes");
}

/// TLS 1.2 on both sides (a client or a backend that speaks no 1.3): a
/// mebibyte both ways, and resumption by session ID.
#[tokio::test]
async fn tls12_both_sides() {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let pki = pki();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.leaf.key_der.clone()));
    let server = Arc::new(
        ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
            .with_no_client_auth()
            .with_single_cert(vec![pki.leaf.cert_der.clone()], key)
            .unwrap(),
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.cert_der().clone()).unwrap();
    let client = || {
        Arc::new(
            ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
                .with_root_certificates(roots.clone())
                .with_no_client_auth(),
        )
    };
    let peer_client = client();
    for round in 0..2 {
        let (ours, theirs) = duplex(64 * 1024);
        let peer = TlsConnector::from(Arc::clone(&peer_client)).connect(name(), theirs);
        let ours = ServerStream::accept(Arc::clone(&server), ours, Vec::new());
        let (ours, peer) = tokio::join!(ours, peer);
        let (ours, peer) = (ours.unwrap(), peer.unwrap());
        assert_eq!(
            ours.connection().protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        let kind = ours.connection().handshake_kind();
        exchange(ours, peer, &pattern(1 << 20, 1), &pattern(1 << 20, 2)).await;
        let want = if round == 0 {
            HandshakeKind::Full
        } else {
            HandshakeKind::Resumed
        };
        assert_eq!(kind, Some(want), "server side, round {round}");
    }
    let our_config = client();
    for round in 0..2 {
        let (ours, peer) = our_client(
            Arc::clone(&our_config),
            Arc::clone(&server),
            |s| s,
            64 * 1024,
            &[],
        )
        .await;
        let (ours, peer) = (ours.unwrap(), peer.unwrap());
        assert_eq!(
            ours.connection().protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        let kind = ours.connection().handshake_kind();
        exchange(ours, peer, &pattern(1 << 20, 3), &pattern(1 << 20, 4)).await;
        let want = if round == 0 {
            HandshakeKind::Full
        } else {
            HandshakeKind::Resumed
        };
        assert_eq!(kind, Some(want), "client side, round {round}");
    }
}
