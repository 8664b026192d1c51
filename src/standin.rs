//! A stand-in enclave: a real rustls TLS server with a certificate from a
//! throw-away CA. The `demo` command routes to one, and the integration tests
//! use several as backends, so both exercise the proxy against real TLS.
//!
//! Behaviour once the handshake is done: a request starting with `GET ` or
//! `HEAD ` gets one HTTP/1.1 answer naming the enclave (so curl works);
//! anything else is echoed back byte for byte until the client half-closes,
//! after which the enclave closes its side too.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A throw-away certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as DER and PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert_der: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_der: Vec<u8>,
    pub key_pem: String,
}

impl Ca {
    pub fn new(common_name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Self { issuer })
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        self.issuer.der()
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Issues a server certificate for `hosts` (names or `*.wildcards`).
    pub fn issue(&self, hosts: &[&str]) -> anyhow::Result<Leaf> {
        self.issue_until(hosts, None)
    }

    /// As [`Ca::issue`], valid until the start of `not_after` (year,
    /// month, day; UTC) if given: renewals differ in their dates.
    pub fn issue_until(
        &self,
        hosts: &[&str],
        not_after: Option<(i32, u8, u8)>,
    ) -> anyhow::Result<Leaf> {
        let mut params =
            CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())?;
        if let Some((y, m, d)) = not_after {
            params.not_after = rcgen::date_time_ymd(y, m, d);
        }
        params.distinguished_name.push(
            DnType::CommonName,
            hosts.first().copied().unwrap_or("stand-in"),
        );
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A rustls client config trusting only this CA.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert_der().clone())
            .expect("a CA we just made is a valid trust anchor");
        let mut cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }
}

impl Leaf {
    /// A rustls server config serving this certificate.
    pub fn server_config(&self, alpn: &[&[u8]]) -> anyhow::Result<Arc<ServerConfig>> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let mut cfg = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![self.cert_der.clone()], key)?;
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(cfg))
    }
}

/// A running stand-in enclave.
pub struct Enclave {
    pub addr: SocketAddr,
    /// Connections whose TLS handshake completed.
    pub handshakes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Enclave {
    /// Serves TLS on `listener` with `config`; `name` is what its HTTP
    /// answers say.
    pub fn spawn(
        listener: TcpListener,
        name: &str,
        config: Arc<ServerConfig>,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let handshakes = Arc::new(AtomicUsize::new(0));
        let name: Arc<str> = name.into();
        let count = Arc::clone(&handshakes);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let name = Arc::clone(&name);
                let count = Arc::clone(&count);
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        count.fetch_add(1, Ordering::Relaxed);
                        let _ = serve(tls, &name).await;
                    }
                });
            }
        });
        Ok(Self {
            addr,
            handshakes,
            task,
        })
    }

    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::Relaxed)
    }
}

impl Drop for Enclave {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<S>(mut tls: S, name: &str) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    let n = tls.read(&mut buf).await?;
    if n == 0 {
        return tls.shutdown().await;
    }
    if buf[..n].starts_with(b"GET ") || buf[..n].starts_with(b"HEAD ") {
        let body = format!("hello from {name}\n");
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(resp.as_bytes()).await?;
        return tls.shutdown().await;
    }
    tls.write_all(&buf[..n]).await?;
    loop {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            return tls.shutdown().await;
        }
        tls.write_all(&buf[..n]).await?;
    }
}
