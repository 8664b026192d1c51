//! `mse-proxy demo`: the proxy on the shipped example config, a stand-in
//! enclave behind it, and one real TLS connection routed through it, so a new
//! user sees passthrough work with nothing else to install or start.

use std::net::SocketAddr;

use anyhow::Context;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

use crate::apps::derive::sha256_hex;
use crate::config::Config;
use crate::routing::{BackendHost, HostPattern, Route};
use crate::server;
use crate::standin::{Ca, Enclave};

pub async fn run(
    config: Config,
    routes: Vec<Route>,
    enclave_addr: SocketAddr,
) -> anyhow::Result<()> {
    // The hosts of the routes that point at the stand-in enclave.
    let served: Vec<&Route> = routes
        .iter()
        .filter(|r| {
            r.backends.iter().any(|b| {
                b.host == BackendHost::Ip(enclave_addr.ip()) && b.port == enclave_addr.port()
            })
        })
        .collect();
    let names: Vec<String> = served
        .iter()
        .flat_map(|r| r.hosts.iter().map(|h| h.to_string()))
        .collect();
    let first = served
        .iter()
        .flat_map(|r| r.hosts.iter())
        .find_map(|h| match h {
            HostPattern::Exact(n) => Some(n.clone()),
            HostPattern::Wildcard(_) => None,
        })
        .with_context(|| {
            format!("no route with an exact host points at the stand-in enclave {enclave_addr}")
        })?;

    let ca = Ca::new("mse-proxy demo CA")?;
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let leaf = ca.issue(&name_refs)?;
    let ca_path = std::env::temp_dir().join("mse-proxy-demo-ca.pem");
    std::fs::write(&ca_path, ca.cert_pem())
        .with_context(|| format!("writing {}", ca_path.display()))?;

    let listener = TcpListener::bind(enclave_addr)
        .await
        .with_context(|| format!("stand-in enclave cannot listen on {enclave_addr}"))?;
    let _enclave = Enclave::spawn(
        listener,
        "the stand-in enclave",
        leaf.server_config(&[b"http/1.1"])?,
    )?;
    // In memory: a demo leaves no state behind (main checked it that way).
    let mut config = config;
    config.state_dir = None;
    let handle = server::start(config, routes)?;
    let proxy_addr = handle.local_addrs[0];

    let (answer, seen) = fetch(proxy_addr, &first, &ca)
        .await
        .context("demo request through the proxy")?;
    let status = answer.lines().next().unwrap_or("").to_string();
    let body = answer
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    println!();
    println!("mse-proxy demo: proxy on {proxy_addr}, stand-in enclave on {enclave_addr}");
    println!("  routed https://{first}/ through the proxy: {status} \"{body}\"");
    println!(
        "  certificate seen through the proxy is the enclave's own: {} (sha256 {})",
        if seen == leaf.cert_der.as_ref() {
            "byte-identical"
        } else {
            "DIFFERENT"
        },
        sha256_hex(&seen)
    );
    println!("Try it yourself:");
    println!(
        "  curl --cacert {} --resolve {first}:{}:{} https://{first}:{}/",
        ca_path.display(),
        proxy_addr.port(),
        proxy_addr.ip(),
        proxy_addr.port()
    );
    println!("Ctrl-C to stop.");
    server::serve_until_signal(handle).await
}

/// One HTTP/1.1 GET over TLS with SNI `host`; returns the answer and the
/// leaf certificate the client was shown.
async fn fetch(addr: SocketAddr, host: &str, ca: &Ca) -> anyhow::Result<(String, Vec<u8>)> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = TlsConnector::from(ca.client_config(&[b"http/1.1"]));
    let mut tls = connector
        .connect(ServerName::try_from(host.to_string())?, tcp)
        .await?;
    let seen = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default();
    tls.write_all(
        format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await?;
    Ok((answer, seen))
}
