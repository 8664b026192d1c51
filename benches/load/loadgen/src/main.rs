//! Load generator for `benches/load/run.sh` (see benches/load/README.md).
//!
//! Two jobs the stock tools cannot do on this machine:
//!
//! * `newconn`: new TLS connections, each with a FULL handshake (resumption
//!   disabled) and one HTTP/1.1 request (`Connection: close`), read to the
//!   server's close, from `--conc` threads for `--secs` seconds. `openssl
//!   s_time` (OpenSSL 3.0) sends no SNI, so it cannot go through an
//!   SNI-routing proxy, and an OpenSSL 3.0 client costs about as much CPU per
//!   handshake as nginx does (~1 ms), so it would be the bottleneck; a rustls
//!   client costs a fraction of that and leaves the server side as the limit.
//! * `idle`: opens `--count` TLS connections (handshake completed, no
//!   request), prints `ready ...`, holds them for `--hold` seconds (or until
//!   killed), then exits.
//!
//! Both offer X25519 only (what an OpenSSL 3.0 client offers; nginx with
//! OpenSSL 3.0 does not speak X25519MLKEM768, which would cost a
//! HelloRetryRequest on the direct path only), ALPN `http/1.1`, and do not
//! verify the server's certificate (signatures are still checked).
//!
//! Output: one line of `key=value` pairs on stdout.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{aws_lc_rs, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else { usage() };
    let opt = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let req = |name: &str| opt(name).unwrap_or_else(|| usage());
    let addr: SocketAddr = req("--addr").parse().unwrap_or_else(|_| usage());
    let sni = ServerName::try_from(req("--sni")).unwrap_or_else(|_| usage());
    let num = |name: &str, default: u64| -> u64 {
        opt(name).map_or(default, |v| v.parse().unwrap_or_else(|_| usage()))
    };
    let cfg = client_config();
    match cmd.as_str() {
        "newconn" => newconn(cfg, addr, sni, num("--secs", 4), num("--conc", 16) as usize),
        "idle" => idle(
            cfg,
            addr,
            sni,
            num("--count", 5000) as usize,
            num("--threads", 4) as usize,
            num("--hold", 60),
        ),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: loadgen newconn --addr IP:PORT --sni NAME [--secs 4] [--conc 16]\n       \
         loadgen idle --addr IP:PORT --sni NAME [--count 5000] [--threads 4] [--hold 60]"
    );
    std::process::exit(2)
}

fn client_config() -> Arc<ClientConfig> {
    let mut provider = aws_lc_rs::default_provider();
    provider.kx_groups = vec![aws_lc_rs::kx_group::X25519];
    let algs = provider.signature_verification_algorithms;
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(algs)))
        .with_no_client_auth();
    cfg.resumption = Resumption::disabled();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// Accepts any certificate; still verifies the handshake signatures (so the
/// client does the work a real one does for them).
#[derive(Debug)]
struct AnyCert(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let sock = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(IO_TIMEOUT))?;
    sock.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(sock)
}

/// One connection: full handshake, one GET, read to the close; checks the
/// status line.
fn one_request(
    cfg: &Arc<ClientConfig>,
    addr: SocketAddr,
    sni: &ServerName<'static>,
    req: &[u8],
) -> io::Result<()> {
    let conn = ClientConnection::new(cfg.clone(), sni.clone()).map_err(io::Error::other)?;
    let mut tls = StreamOwned::new(conn, connect(addr)?);
    tls.write_all(req)?;
    let mut buf = [0u8; 4096];
    let mut head = Vec::with_capacity(16);
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if head.len() < 12 {
                    head.extend_from_slice(&buf[..n.min(12)]);
                }
            }
            // A peer that closes without close_notify: the response is in.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !head.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    if head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200") {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "bad response {:?}",
            String::from_utf8_lossy(&head)
        )))
    }
}

fn newconn(
    cfg: Arc<ClientConfig>,
    addr: SocketAddr,
    sni: ServerName<'static>,
    secs: u64,
    conc: usize,
) {
    let host = match &sni {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        other => format!("{other:?}"),
    };
    let req: Arc<[u8]> = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
        .into_bytes()
        .into();
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let handles: Vec<_> = (0..conc.max(1))
        .map(|_| {
            let (cfg, sni, req, errors) = (cfg.clone(), sni.clone(), req.clone(), errors.clone());
            std::thread::spawn(move || {
                let mut lat_us: Vec<u32> = Vec::with_capacity(16384);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match one_request(&cfg, addr, &sni, &req) {
                        Ok(()) => lat_us.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32),
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("loadgen newconn: first error: {e}");
                            }
                            // Do not spin on a refused port.
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                lat_us
            })
        })
        .collect();
    let mut lat: Vec<u32> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect();
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        lat[((lat.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
    };
    println!(
        "conns={} errors={} secs={:.3} rate={:.1} p50_ms={:.2} p99_ms={:.2}",
        lat.len(),
        errors.load(Ordering::Relaxed),
        elapsed,
        lat.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
}

fn idle(
    cfg: Arc<ClientConfig>,
    addr: SocketAddr,
    sni: ServerName<'static>,
    count: usize,
    threads: usize,
    hold: u64,
) {
    let threads = threads.clamp(1, count.max(1));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let n = count / threads + usize::from(i < count % threads);
            let (cfg, sni, errors) = (cfg.clone(), sni.clone(), errors.clone());
            std::thread::spawn(move || {
                let mut held = Vec::with_capacity(n);
                for _ in 0..n {
                    match open_idle(&cfg, addr, &sni) {
                        Ok(c) => held.push(c),
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("loadgen idle: first error: {e}");
                            }
                        }
                    }
                }
                held
            })
        })
        .collect();
    let held: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect();
    println!(
        "ready opened={} errors={} secs={:.3}",
        held.len(),
        errors.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64()
    );
    io::stdout().flush().ok();
    // Hold them; the driver kills this process once it has measured.
    std::thread::sleep(Duration::from_secs(hold));
    drop(held);
}

fn open_idle(
    cfg: &Arc<ClientConfig>,
    addr: SocketAddr,
    sni: &ServerName<'static>,
) -> io::Result<(ClientConnection, TcpStream)> {
    let mut conn = ClientConnection::new(cfg.clone(), sni.clone()).map_err(io::Error::other)?;
    let mut sock = connect(addr)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok((conn, sock))
}
