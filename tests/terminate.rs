//! Termination end to end: the proxy completes the client's handshake with
//! the platform's certificate and opens a new connection (pinned TLS, CA
//! verified TLS, unverified TLS, or plain TCP) to the enclave.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mse_proxy::config::terminate::UpstreamSpec;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const APPS: &str = "*.apps.example.test";

/// A wildcard certificate for the app domain from a fresh platform CA.
fn platform() -> (Ca, PlatformCert) {
    let ca = Ca::new("platform CA").unwrap();
    let cert = PlatformCert::new(&ca.issue(&[APPS]).unwrap());
    (ca, cert)
}

/// Waits until `route` has counted `n` connections ending in `outcome`.
async fn counted(p: &mse_proxy::proxy::ProxyHandle, route: &str, outcome: &str, n: u64) -> bool {
    eventually(Duration::from_secs(5), || {
        outcomes(p, route, "terminate", outcome) == n
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_certificate_serves_two_apps_over_http1_and_h2_to_pinned_backends() {
    let (platform_ca, cert) = platform();
    let enclave_ca = Ca::new("enclave CA").unwrap();
    let (b1, leaf1) = HttpBackend::tls(&enclave_ca, "b1").await;
    let (b2, leaf2) = HttpBackend::tls(&enclave_ca, "b2").await;
    let p = proxy(
        config(&cert.toml()),
        &[
            // One app, its public and its configuration hostname.
            terminate_spec(
                "shop",
                &["shop.apps.example.test", "shop-config.apps.example.test"],
                &[b1.addr],
                pinned(&leaf1),
            ),
            terminate_spec(
                "blog",
                &["blog.apps.example.test"],
                &[b2.addr],
                pinned(&leaf2),
            ),
        ],
    );
    let ca_pem = ca_file(&platform_ca);
    for (host, backend) in [
        ("shop.apps.example.test", "b1"),
        ("shop-config.apps.example.test", "b1"),
        ("blog.apps.example.test", "b2"),
    ] {
        for (flag, seen, curl_version) in [
            ("--http1.1", "HTTP/1.1", "1.1"),
            ("--http2", "HTTP/2.0", "2"),
        ] {
            let (ok, out) = curl(addr(&p), host, ca_pem.path(), flag).await;
            assert!(ok, "curl {flag} {host} failed:\n{out}");
            assert_eq!(
                out,
                format!("hello from {backend} over {seen}\n{curl_version}"),
                "curl {flag} {host}"
            );
        }
    }
    assert!(counted(&p, "shop", "ok", 4).await);
    assert!(counted(&p, "blog", "ok", 2).await);
}

#[tokio::test]
async fn wrong_pin_is_an_upstream_tls_error_and_the_client_is_closed() {
    let (platform_ca, cert) = platform();
    let enclave_ca = Ca::new("enclave CA").unwrap();
    let (b, _) = HttpBackend::tls(&enclave_ca, "b").await;
    let other = enclave_ca.issue(&["enclave.internal"]).unwrap();
    let p = proxy(
        config(&cert.toml()),
        &[terminate_spec(
            "app",
            &["app.apps.example.test"],
            &[b.addr],
            pinned(&other),
        )],
    );
    // The client's handshake (with the platform) succeeds; then it is closed
    // without an answer.
    let (body, seen) = get(addr(&p), "app.apps.example.test", &platform_ca)
        .await
        .unwrap();
    assert_eq!(body, "");
    assert_ne!(seen, other.cert_der.as_ref());
    assert!(counted(&p, "app", "upstream_tls_error", 1).await);
    let ca_pem = ca_file(&platform_ca);
    let (ok, out) = curl(
        addr(&p),
        "app.apps.example.test",
        ca_pem.path(),
        "--http1.1",
    )
    .await;
    assert!(!ok, "curl must fail: {out}");
    assert!(
        out.contains("Empty reply") || out.contains("closed"),
        "{out}"
    );
    assert!(counted(&p, "app", "upstream_tls_error", 2).await);
}

#[tokio::test]
async fn ca_file_verifies_the_chain_and_the_upstream_name() {
    let (platform_ca, cert) = platform();
    let enclave_ca = Ca::new("enclave CA").unwrap();
    let (good, _) = HttpBackend::tls(&enclave_ca, "good").await;
    let stranger_ca = Ca::new("someone else").unwrap();
    let (bad, _) = HttpBackend::tls(&stranger_ca, "bad").await;
    let enclave_ca_pem = ca_file(&enclave_ca);
    let verified = |sni: &str| UpstreamSpec {
        ca_file: Some(enclave_ca_pem.path().display().to_string()),
        sni: Some(sni.into()),
        ..Default::default()
    };
    let p = proxy(
        config(&cert.toml()),
        &[
            terminate_spec(
                "good",
                &["good.apps.example.test"],
                &[good.addr],
                verified("enclave.internal"),
            ),
            // Right chain, wrong name.
            terminate_spec(
                "misnamed",
                &["misnamed.apps.example.test"],
                &[good.addr],
                verified("other.internal"),
            ),
            // A chain to another CA.
            terminate_spec(
                "bad",
                &["bad.apps.example.test"],
                &[bad.addr],
                verified("enclave.internal"),
            ),
        ],
    );
    let ca_pem = ca_file(&platform_ca);
    let (ok, out) = curl(addr(&p), "good.apps.example.test", ca_pem.path(), "--http2").await;
    assert!(ok, "{out}");
    assert_eq!(out, "hello from good over HTTP/2.0\n2");
    for route in ["misnamed", "bad"] {
        let (body, _) = get(
            addr(&p),
            &format!("{route}.apps.example.test"),
            &platform_ca,
        )
        .await
        .unwrap();
        assert_eq!(body, "", "{route}");
        assert!(counted(&p, route, "upstream_tls_error", 1).await, "{route}");
    }
}

#[tokio::test]
async fn insecure_skip_verify_reaches_a_backend_with_any_certificate() {
    let (platform_ca, cert) = platform();
    let stranger_ca = Ca::new("unknown").unwrap();
    let (b, _) = HttpBackend::tls(&stranger_ca, "anyone").await;
    let p = proxy(
        config(&cert.toml()),
        &[terminate_spec(
            "app",
            &["app.apps.example.test"],
            &[b.addr],
            UpstreamSpec {
                insecure_skip_verify: Some(true),
                ..Default::default()
            },
        )],
    );
    let ca_pem = ca_file(&platform_ca);
    let (ok, out) = curl(addr(&p), "app.apps.example.test", ca_pem.path(), "--http2").await;
    assert!(ok, "{out}");
    assert_eq!(out, "hello from anyone over HTTP/2.0\n2");
}

#[tokio::test]
async fn plain_tcp_upstream_gets_the_decrypted_bytes() {
    let (platform_ca, cert) = platform();
    let b = HttpBackend::spawn(None, "plain").await;
    let mut spec = terminate_spec(
        "app",
        &["app.apps.example.test"],
        &[b.addr],
        UpstreamSpec {
            tls: Some(false),
            ..Default::default()
        },
    );
    // No ALPN upstream to agree on h2 over plain TCP: offer HTTP/1.1 only.
    spec.alpn = Some(vec!["http/1.1".into()]);
    let p = proxy(config(&cert.toml()), &[spec]);
    let ca_pem = ca_file(&platform_ca);
    let (ok, out) = curl(addr(&p), "app.apps.example.test", ca_pem.path(), "--http2").await;
    assert!(ok, "{out}");
    assert_eq!(out, "hello from plain over HTTP/1.1\n1.1");
    assert!(counted(&p, "app", "ok", 1).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_and_terminate_routes_share_one_listener() {
    let (platform_ca, cert) = platform();
    // The passthrough enclave holds its own certificate, from the same CA
    // here so that one client trusts both.
    let (pt, pt_leaf) = enclave(&platform_ca, &["zero-trust.example.test"], "enclave").await;
    let enclave_ca = Ca::new("enclave CA").unwrap();
    let (b, leaf) = HttpBackend::tls(&enclave_ca, "terminated").await;
    let p = proxy(
        config(&cert.toml()),
        &[
            spec("zero", &["zero-trust.example.test"], &[pt.addr.to_string()]),
            terminate_spec("any", &["any.apps.example.test"], &[b.addr], pinned(&leaf)),
        ],
    );
    let (body, seen) = get(addr(&p), "zero-trust.example.test", &platform_ca)
        .await
        .unwrap();
    assert_eq!(body, "hello from enclave");
    assert_eq!(
        seen,
        pt_leaf.cert_der.as_ref(),
        "passthrough shows the enclave's own certificate"
    );
    let (body, seen) = get(addr(&p), "any.apps.example.test", &platform_ca)
        .await
        .unwrap();
    assert_eq!(body, "hello from terminated over HTTP/1.1");
    let platform_leaf = std::fs::read_to_string(&cert.cert).unwrap();
    assert!(
        platform_leaf.contains(&pem_body(&seen)),
        "terminate shows the platform's certificate"
    );
    assert_eq!(pt.handshakes(), 1);
    assert!(counted(&p, "any", "ok", 1).await);
}

/// The base64 lines of a DER certificate, as they appear in its PEM.
fn pem_body(der: &[u8]) -> String {
    let pem = rcgen_pem(der);
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn rcgen_pem(der: &[u8]) -> String {
    use rustls::pki_types::pem::PemObject;
    let _ = rustls::pki_types::CertificateDer::from_pem_slice(b"");
    let b64 = base64_encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
