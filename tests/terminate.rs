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
async fn wildcard_certificate_serves_two_apps_to_pinned_backends_over_http1_only() {
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
        // Two apps share the wildcard, so neither gets h2: a browser would
        // reuse an HTTP/2 connection to one for the other (RFC 9113
        // §9.1.1; tests/shared_certificate.rs).
        for (flag, seen, curl_version) in [
            ("--http1.1", "HTTP/1.1", "1.1"),
            ("--http2", "HTTP/1.1", "1.1"),
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
    // HTTP/1.1: `bad` is another tenant on the same wildcard certificate.
    assert_eq!(out, "hello from good over HTTP/1.1\n1.1");
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
    assert_eq!(
        seen,
        cert.leaf_der(),
        "terminate shows the platform's certificate"
    );
    assert_eq!(pt.handshakes(), 1);
    assert!(counted(&p, "any", "ok", 1).await);
}

fn peer_cert(c: &EchoConn) -> Vec<u8> {
    c.0.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

async fn reload(live: &Live) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(live.admin("/reload"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_replaced_on_disk_is_served_after_reload_and_open_connections_stay() {
    let (platform_ca, cert) = platform();
    let enclave_ca = Ca::new("enclave CA").unwrap();
    // An echoing stand-in enclave behind a pinned terminate route.
    let (e, leaf) = enclave(&enclave_ca, &["enclave.internal"], "echo").await;
    let host = "echo.apps.example.test";
    let live = Live::start(
        &[terminate_spec("echo", &[host], &[e.addr], pinned(&leaf))],
        &cert.toml(),
    );
    let first = cert.leaf_der();
    let mut open = EchoConn::open(live.addr(), host, &platform_ca).await;
    assert_eq!(peer_cert(&open), first);

    // Renewed on disk; re-read through the reconciler (as SIGHUP does).
    let renewed = platform_ca.issue(&[APPS]).unwrap();
    cert.replace(&renewed);
    live.server.control.reload_file().await.unwrap();
    let fresh = EchoConn::open(live.addr(), host, &platform_ca).await;
    assert_eq!(peer_cert(&fresh), renewed.cert_der.as_ref());
    assert!(
        open.ping("after the reload").await,
        "the open connection was dropped"
    );

    // Renewed again, through POST /reload.
    let again = platform_ca.issue(&[APPS]).unwrap();
    cert.replace(&again);
    let (status, body) = reload(&live).await;
    assert_eq!(status, 200, "{body}");
    let fresh = EchoConn::open(live.addr(), host, &platform_ca).await;
    assert_eq!(peer_cert(&fresh), again.cert_der.as_ref());

    // A broken key refuses the whole reload: the live certificate stays.
    std::fs::write(&cert.key, "not a key").unwrap();
    let (status, body) = reload(&live).await;
    assert_eq!(status, 400, "{body}");
    let detail = body["details"][0].as_str().unwrap();
    assert!(
        detail.contains("test.toml: certificate[0].key: `"),
        "{detail}"
    );
    let fresh = EchoConn::open(live.addr(), host, &platform_ca).await;
    assert_eq!(peer_cert(&fresh), again.cert_der.as_ref());
    assert!(open.ping("after a refused reload").await);
    assert!(
        live.server
            .control
            .stats
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

#[tokio::test]
async fn a_terminate_route_no_certificate_serves_is_refused_by_the_api() {
    let (_, cert) = platform();
    let live = Live::start(&[], &cert.toml());
    let spec = terminate_spec(
        "elsewhere",
        &["app.elsewhere.test"],
        &[closed_port().await],
        UpstreamSpec {
            insecure_skip_verify: Some(true),
            ..Default::default()
        },
    );
    let resp = live.put_route("elsewhere", &spec).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    let detail = body["details"][0].as_str().unwrap();
    assert_eq!(
        detail,
        "admin API: route `elsewhere`.hosts[0]: no [[certificate]] serves `app.elsewhere.test`; \
         a terminate route needs one for each host"
    );
    // Covered by the wildcard: accepted.
    let ok = terminate_spec(
        "covered",
        &["app.apps.example.test"],
        &[closed_port().await],
        UpstreamSpec {
            tls: Some(false),
            ..Default::default()
        },
    );
    let resp = live.put_route("covered", &ok).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_cut_at_the_hello_deadline() {
    let (platform_ca, cert) = platform();
    let enclave_ca = Ca::new("enclave CA").unwrap();
    let (b, leaf) = HttpBackend::tls(&enclave_ca, "b").await;
    let p = proxy(
        config(&format!(
            "{}[timeouts]\nclient_hello = \"1s\"\n",
            cert.toml()
        )),
        &[terminate_spec(
            "app",
            &["app.apps.example.test"],
            &[b.addr],
            pinned(&leaf),
        )],
    );
    let name = ServerName::try_from("app.apps.example.test").unwrap();
    let mut conn =
        rustls::ClientConnection::new(platform_ca.client_config(&[b"http/1.1"]), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    let started = tokio::time::Instant::now();
    let mut s = TcpStream::connect(addr(&p)).await.unwrap();
    // The whole hello, then silence: the proxy answers, then waits for a
    // Finished that never comes.
    s.write_all(&hello).await.unwrap();
    let (bytes, closed) = read_to_close(&mut s, Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert!(closed, "stalled handshake was never cut");
    assert_eq!(
        bytes.first(),
        Some(&0x16),
        "the proxy sent its handshake flight"
    );
    assert!(
        took >= Duration::from_millis(900),
        "cut too early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "cut late: {took:?}");
    assert!(counted(&p, "app", "hello_timeout", 1).await);
    assert!(eventually(Duration::from_secs(5), || p.open_connections() == 0).await);
}

/// The proxy picks the suite (`tls::ordered_provider`): AES-128-GCM for a
/// client that lists AES-256-GCM first (as curl, OpenSSL and rustls do),
/// ChaCha20-Poly1305 for one that lists it before every AES-GCM suite (a
/// client without AES instructions), in TLS 1.3 and 1.2 alike.
#[tokio::test]
async fn the_proxy_prefers_aes_128_gcm_unless_the_client_prefers_chacha() {
    use rustls::crypto::aws_lc_rs::{cipher_suite as cs, default_provider};
    use rustls::CipherSuite as S;
    let (platform_ca, _b, p) = pinned_app().await;
    let cases = [
        (
            vec![
                cs::TLS13_AES_256_GCM_SHA384,
                cs::TLS13_AES_128_GCM_SHA256,
                cs::TLS13_CHACHA20_POLY1305_SHA256,
            ],
            S::TLS13_AES_128_GCM_SHA256,
        ),
        (
            vec![
                cs::TLS13_CHACHA20_POLY1305_SHA256,
                cs::TLS13_AES_256_GCM_SHA384,
                cs::TLS13_AES_128_GCM_SHA256,
            ],
            S::TLS13_CHACHA20_POLY1305_SHA256,
        ),
        (
            vec![cs::TLS13_AES_256_GCM_SHA384],
            S::TLS13_AES_256_GCM_SHA384,
        ),
        (
            vec![
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            ],
            S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            vec![
                cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ],
            S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ];
    for (suites, want) in cases {
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: suites,
            ..default_provider()
        };
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap();
        let connector = connector(builder, &platform_ca);
        let suite = get_app(&p, &connector, |c| c.negotiated_cipher_suite()).await;
        assert_eq!(suite.map(|s| s.suite()), Some(want));
    }
}

/// A proxy with one terminate route, `app.apps.example.test`, to a pinned
/// TLS backend answering "hello from b"; and the platform CA.
async fn pinned_app() -> (Ca, HttpBackend, mse_proxy::server::Server) {
    let (platform_ca, cert) = platform();
    let enclave_ca = Ca::new("enclave CA").unwrap();
    let (b, leaf) = HttpBackend::tls(&enclave_ca, "b").await;
    let spec = terminate_spec("app", &["app.apps.example.test"], &[b.addr], pinned(&leaf));
    let p = proxy(config(&cert.toml()), &[spec]);
    (platform_ca, b, p)
}

/// A client trusting `ca`, offering HTTP/1.1, from a config builder.
fn connector(
    builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>,
    ca: &Ca,
) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let mut cfg = builder.with_root_certificates(roots).with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(cfg))
}

/// One GET to [`pinned_app`]'s route through `connector`, checked, and what
/// `seen` reads from the client connection after its handshake.
async fn get_app<T>(
    p: &mse_proxy::server::Server,
    connector: &TlsConnector,
    seen: impl FnOnce(&rustls::ClientConnection) -> T,
) -> T {
    let tcp = TcpStream::connect(addr(p)).await.unwrap();
    let name = ServerName::try_from("app.apps.example.test").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let out = seen(tls.get_ref().1);
    tls.write_all(b"GET / HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap();
    assert!(answer.ends_with("hello from b over HTTP/1.1\n"), "{answer}");
    out
}

#[tokio::test]
async fn tls12_and_tls13_clients_resume_their_sessions() {
    let (platform_ca, _b, p) = pinned_app().await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let builder = rustls::ClientConfig::builder_with_protocol_versions(&[version]);
        let connector = connector(builder, &platform_ca);
        for (i, want) in [rustls::HandshakeKind::Full, rustls::HandshakeKind::Resumed]
            .into_iter()
            .enumerate()
        {
            let (v, kind) = get_app(&p, &connector, |c| {
                (c.protocol_version(), c.handshake_kind())
            })
            .await;
            assert_eq!(v, Some(version.version));
            assert_eq!(kind, Some(want), "{:?} connection {i}", version.version);
        }
    }
}

#[test]
fn check_reports_bad_certificate_files_and_uncovered_routes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("platform CA").unwrap();
    let leaf = ca.issue(&[APPS]).unwrap();
    std::fs::write(dir.path().join("platform.crt"), &leaf.cert_pem).unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        "routes_file = \"routes.toml\"\n[[listener]]\naddress = \"127.0.0.1:0\"\n\
         [[certificate]]\ncert = \"platform.crt\"\nkey = \"platform.key\"\n",
    )
    .unwrap();
    let routes = dir.path().join("routes.toml");
    write_routes(
        &routes,
        &[terminate_spec(
            "app",
            &["app.elsewhere.test"],
            &["127.0.0.1:1".parse().unwrap()],
            UpstreamSpec {
                tls: Some(false),
                ..Default::default()
            },
        )],
    );
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mse-proxy"))
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    // The key file is missing: named by field and path, exit code 3.
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let want = format!(
        "{}: certificate[0].key: `{}`: cannot read",
        config.display(),
        dir.path().join("platform.key").display()
    );
    assert!(stderr.contains(&want), "want {want:?} in:\n{stderr}");

    // With the key in place, the route's host is the problem.
    std::fs::write(dir.path().join("platform.key"), &leaf.key_pem).unwrap();
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let want = format!(
        "{}: route[0].hosts[0]: no [[certificate]] serves `app.elsewhere.test`",
        routes.display()
    );
    assert!(stderr.contains(&want), "want {want:?} in:\n{stderr}");

    // Covered by the wildcard: ok.
    write_routes(
        &routes,
        &[terminate_spec(
            "app",
            &["app.apps.example.test"],
            &["127.0.0.1:1".parse().unwrap()],
            UpstreamSpec {
                tls: Some(false),
                ..Default::default()
            },
        )],
    );
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// 32 MiB through a terminated connection and back, byte-exact: the client
/// half-closes (close_notify), the proxy passes that on to the enclave, and
/// the echo still flows back until the enclave closes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_echo_with_half_close_is_byte_exact() {
    const TOTAL: usize = 32 * 1024 * 1024;
    let (platform_ca, cert) = platform();
    let enclave_ca = Ca::new("enclave CA").unwrap();
    let (e, leaf) = enclave(&enclave_ca, &["enclave.internal"], "echo").await;
    let p = proxy(
        config(&cert.toml()),
        &[terminate_spec(
            "bulk",
            &["bulk.apps.example.test"],
            &[e.addr],
            pinned(&leaf),
        )],
    );
    let tls = tls_connect(addr(&p), "bulk.apps.example.test", &platform_ca)
        .await
        .unwrap();
    let (mut rd, mut wr) = tokio::io::split(tls);
    let writer = tokio::spawn(async move {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0usize;
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        while sent < TOTAL {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            wr.write_all(&buf).await.unwrap();
            ctx.update(&buf);
            sent += buf.len();
        }
        wr.shutdown().await.unwrap();
        ctx.finish().as_ref().to_vec()
    });
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let read = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let n = rd.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
            got += n;
        }
    })
    .await;
    assert!(read.is_ok(), "transfer stalled at {got} bytes");
    assert_eq!(got, TOTAL);
    assert_eq!(ctx.finish().as_ref(), writer.await.unwrap().as_slice());
    assert!(counted(&p, "bulk", "ok", 1).await);
}

#[tokio::test]
async fn removing_a_terminate_route_closes_its_connections() {
    let (platform_ca, cert) = platform();
    let enclave_ca = Ca::new("enclave CA").unwrap();
    let (e, leaf) = enclave(&enclave_ca, &["enclave.internal"], "echo").await;
    let host = "gone.apps.example.test";
    let live = Live::start(
        &[terminate_spec("gone", &[host], &[e.addr], pinned(&leaf))],
        &cert.toml(),
    );
    let mut open = EchoConn::open(live.addr(), host, &platform_ca).await;
    write_routes(&live.routes_path, &[]);
    live.server.control.reload_file().await.unwrap();
    assert!(open.closed_within(Duration::from_secs(5)).await);
    assert!(counted(&live.server, "gone", "route_removed", 1).await);
}
