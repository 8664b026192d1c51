//! Terminate routes give clients only a protocol the backend accepted: the
//! proxy offers the backend what the client offered, then finishes the
//! client's handshake with the backend's choice. Proven with curl, a rustls
//! client and a real browser (headless Chromium) against an HTTP/1.1-only
//! and an HTTP/2-only TLS backend.

mod common;

use std::time::Duration;

use common::*;
use mse_proxy::config::terminate::UpstreamSpec;
use mse_proxy::standin::Leaf;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const HOST: &str = "app.apps.example.test";

/// The platform's wildcard certificate from a fresh CA (and its leaf, whose
/// key the browser is told to trust).
fn platform() -> (Ca, Leaf, PlatformCert) {
    let ca = Ca::new("platform CA").unwrap();
    let leaf = ca.issue(&["*.apps.example.test"]).unwrap();
    let cert = PlatformCert::new(&leaf);
    (ca, leaf, cert)
}

/// A proxy with one terminate route, `app`, pinned to `backend`.
fn one_route(cert: &PlatformCert, backend: &HttpBackend, leaf: &Leaf) -> mse_proxy::server::Server {
    proxy(
        config(&cert.toml()),
        &[terminate_spec(
            "app",
            &[HOST],
            &[backend.addr],
            pinned(leaf),
        )],
    )
}

async fn counted(p: &mse_proxy::proxy::ProxyHandle, outcome: &str, n: u64) -> bool {
    eventually(Duration::from_secs(5), || {
        outcomes(p, "app", "terminate", outcome) == n
    })
    .await
}

/// The protocol a rustls client offering `alpn` gets from the proxy, or the
/// handshake's error.
async fn negotiated(
    p: &mse_proxy::proxy::ProxyHandle,
    ca: &Ca,
    alpn: &[&[u8]],
) -> Result<Option<Vec<u8>>, String> {
    let tcp = TcpStream::connect(addr(p)).await.unwrap();
    let tls = TlsConnector::from(ca.client_config(alpn))
        .connect(ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let got = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_only_backend_never_gets_http2() {
    let (ca, _, cert) = platform();
    let enclave_ca = Ca::new("enclave CA").unwrap();
    let (b, leaf) = HttpBackend::tls_speaking(&enclave_ca, "h1", Speaks::Http1Only).await;
    let p = one_route(&cert, &b, &leaf);
    let ca_pem = ca_file(&ca);
    for flag in ["--http2", "--http1.1"] {
        let (ok, out) = curl(addr(&p), HOST, ca_pem.path(), flag).await;
        assert!(ok, "curl {flag}: {out}");
        assert_eq!(out, "hello from h1 over HTTP/1.1\n1.1", "curl {flag}");
    }
    assert!(counted(&p, "ok", 2).await, "the two curl requests");
    assert_eq!(b.seen().len(), 2);
    // The backend selected no protocol, so the client gets none.
    assert_eq!(negotiated(&p, &ca, &[b"h2", b"http/1.1"]).await, Ok(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_only_backend_gets_h2_and_an_http1_client_is_an_alpn_mismatch() {
    let (ca, _, cert) = platform();
    let enclave_ca = Ca::new("enclave CA").unwrap();
    let (b, leaf) = HttpBackend::tls_speaking(&enclave_ca, "h2", Speaks::Http2Only).await;
    let p = one_route(&cert, &b, &leaf);
    let ca_pem = ca_file(&ca);
    let (ok, out) = curl(addr(&p), HOST, ca_pem.path(), "--http2").await;
    assert!(ok, "{out}");
    assert_eq!(out, "hello from h2 over HTTP/2.0\n2");
    assert_eq!(
        negotiated(&p, &ca, &[b"h2", b"http/1.1"]).await,
        Ok(Some(b"h2".to_vec()))
    );
    // An HTTP/1.1-only client: the backend takes none of its protocols, so
    // it is refused with no_application_protocol, counted, not relayed.
    let (ok, out) = curl(addr(&p), HOST, ca_pem.path(), "--http1.1").await;
    assert!(!ok, "curl --http1.1 must fail: {out}");
    assert!(
        out.contains("no application protocol") || out.contains("alert"),
        "{out}"
    );
    let err = negotiated(&p, &ca, &[b"http/1.1"]).await.unwrap_err();
    assert!(err.contains("NoApplicationProtocol"), "{err}");
    assert!(counted(&p, "alpn_mismatch", 2).await);
    assert_eq!(outcomes(&p, "app", "terminate", "upstream_tls_error"), 0);
    assert_eq!(b.seen().len(), 1, "only the h2 request reached it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_alpn_gets_none_and_the_route_list_narrows_the_offer() {
    let (ca, _, cert) = platform();
    let enclave_ca = Ca::new("enclave CA").unwrap();
    let (b, leaf) = HttpBackend::tls(&enclave_ca, "both").await;
    let mut spec = terminate_spec("app", &[HOST], &[b.addr], pinned(&leaf));
    spec.alpn = Some(vec!["http/1.1".into()]);
    let p = proxy(config(&cert.toml()), &[spec]);
    assert_eq!(negotiated(&p, &ca, &[]).await, Ok(None));
    // The backend would take h2; the route allows only HTTP/1.1.
    assert_eq!(
        negotiated(&p, &ca, &[b"h2", b"http/1.1"]).await,
        Ok(Some(b"http/1.1".to_vec()))
    );
    let err = negotiated(&p, &ca, &[b"h2"]).await.unwrap_err();
    assert!(err.contains("NoApplicationProtocol"), "{err}");
    assert!(counted(&p, "alpn_mismatch", 1).await);
}

#[tokio::test]
async fn a_plain_tcp_backend_without_alpn_gets_http1() {
    let (ca, _, cert) = platform();
    let b = HttpBackend::spawn_speaking(None, "plain", Speaks::Http1Only).await;
    let spec = terminate_spec(
        "app",
        &[HOST],
        &[b.addr],
        UpstreamSpec {
            tls: Some(false),
            ..Default::default()
        },
    );
    let p = proxy(config(&cert.toml()), &[spec]);
    let ca_pem = ca_file(&ca);
    let (ok, out) = curl(addr(&p), HOST, ca_pem.path(), "--http2").await;
    assert!(ok, "{out}");
    assert_eq!(out, "hello from plain over HTTP/1.1\n1.1");
    assert_eq!(negotiated(&p, &ca, &[b"h2", b"http/1.1"]).await, Ok(None));
}

/// The issue's browser: under the shipped defaults (no `alpn` on the
/// route), Chromium loads the page from an HTTP/1.1-only enclave (before,
/// it negotiated h2 with the proxy and failed with ERR_HTTP2_PROTOCOL_ERROR)
/// and from an HTTP/2-only one, each over the protocol the enclave speaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_loads_pages_from_http1_only_and_h2_only_backends() {
    eprintln!("browser: {}", browser::version().await.trim());
    for (speaks, name, seen) in [
        (Speaks::Http1Only, "h1", "HTTP/1.1"),
        (Speaks::Http2Only, "h2", "HTTP/2.0"),
    ] {
        let (_, leaf_platform, cert) = platform();
        let enclave_ca = Ca::new("enclave CA").unwrap();
        let (b, leaf) = HttpBackend::tls_speaking(&enclave_ca, name, speaks).await;
        let p = one_route(&cert, &b, &leaf);
        let spki = browser::spki_hash(&leaf_platform);
        let (ok, out) = browser::dump_dom(addr(&p), HOST, &spki).await;
        let want = format!("hello from {name} over {seen}");
        assert!(
            ok && out.contains(&want),
            "{name}: chromium printed:\n{out}"
        );
        assert_eq!(outcomes(&p, "app", "terminate", "alpn_mismatch"), 0);
    }
}
