//! Sends one rustls 0.23 ClientHello to a capture listener (see `scripts/capture-hello.py`)
//! so the parser's tests can use real rustls hellos, with and without a post-quantum key share.
//!
//! Usage: `cargo run --example capture_rustls_hello -- ADDR SNI pq|nopq`
//!
//! * `pq`: the default aws-lc-rs provider, which (with the default `prefer-post-quantum` feature)
//!   sends an X25519MLKEM768 key share: a ~1.2 KB share that pushes the hello past 1,200 bytes.
//! * `nopq`: the same provider restricted to X25519 and P-256, the classic ~250-byte hello.
//!
//! The listener closes after reading the hello, so the handshake fails; that is expected.

use std::sync::Arc;

use rustls::crypto::aws_lc_rs::{self, kx_group};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, sni, mode] = args.as_slice() else {
        return Err("usage: capture_rustls_hello ADDR SNI pq|nopq".into());
    };
    let mut provider = aws_lc_rs::default_provider();
    match mode.as_str() {
        "pq" => {}
        "nopq" => provider.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1],
        other => return Err(format!("mode must be pq or nopq, not {other:?}").into()),
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    let server_name = ServerName::try_from(sni.clone())?;
    let tcp = TcpStream::connect(addr.as_str()).await?;
    match TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
    {
        Ok(_) => eprintln!("handshake unexpectedly succeeded"),
        Err(e) => eprintln!("handshake failed (expected, the capture listener hangs up): {e}"),
    }
    Ok(())
}
