//! No cross-tenant HTTP/2 connection reuse: a terminate route whose
//! certificate also serves another app's hosts gets no h2, so no client
//! holds an HTTP/2 connection on which it could send another app's
//! `:authority` (RFC 9113 §9.1.1), unless the route forces h2 in its own
//! `alpn`, which `check` and the start log flag. Real HTTP/2 clients: hyper
//! over rustls, and curl.

mod common;

use std::time::Duration;

use common::*;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use mse_proxy::config::routes::RouteSpec;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const A: &str = "a.apps.example.test";
const B: &str = "b.apps.example.test";

struct Apps {
    ca: Ca,
    cert: PlatformCert,
    a: HttpBackend,
    b: HttpBackend,
    specs: Vec<RouteSpec>,
}

/// Apps `a` and `b`, each its own enclave (both serving h2 and HTTP/1.1),
/// behind one wildcard platform certificate; `a_alpn` is route a's `alpn`.
async fn two_apps(a_alpn: Option<&[&str]>) -> Apps {
    let ca = Ca::new("platform CA").unwrap();
    let cert = PlatformCert::new(&ca.issue(&["*.apps.example.test"]).unwrap());
    let enclave_ca = Ca::new("enclave CA").unwrap();
    let (a, leaf_a) = HttpBackend::tls(&enclave_ca, "a").await;
    let (b, leaf_b) = HttpBackend::tls(&enclave_ca, "b").await;
    let mut spec_a = terminate_spec("a", &[A], &[a.addr], pinned(&leaf_a));
    spec_a.alpn = a_alpn.map(|l| l.iter().map(|p| p.to_string()).collect());
    let spec_b = terminate_spec("b", &[B], &[b.addr], pinned(&leaf_b));
    Apps {
        ca,
        cert,
        a,
        b,
        specs: vec![spec_a, spec_b],
    }
}

/// What a coalescing HTTP/2 client does: a connection to `sni` offering
/// `alpn`; if it negotiated h2, a request for `authority` on it (hyper's
/// HTTP/2 client), as a browser does for another host the certificate
/// covers. `Err` with the handshake's error; `Ok(None)` when the proxy gave
/// no h2, so there is no HTTP/2 connection to reuse.
async fn coalesce(
    proxy: std::net::SocketAddr,
    ca: &Ca,
    sni: &str,
    alpn: &[&[u8]],
    authority: &str,
) -> Result<Option<String>, String> {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let tls = TlsConnector::from(ca.client_config(alpn))
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Ok(None);
    }
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("https://{authority}/"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
        .await
        .expect("h2 answer in time")
        .map_err(|e| e.to_string())?;
    let body = answer.into_body().collect().await.unwrap().to_bytes();
    Ok(Some(String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_wildcard_gives_no_h2_so_app_b_requests_never_reach_app_a() {
    let apps = two_apps(None).await;
    let p = proxy(config(&apps.cert.toml()), &apps.specs);
    let at = addr(&p);
    // A browser-like client offering h2 and HTTP/1.1 gets HTTP/1.1: there
    // is no HTTP/2 connection to a on which b's requests could ride.
    assert_eq!(
        coalesce(at, &apps.ca, A, &[b"h2", b"http/1.1"], B).await,
        Ok(None)
    );
    // An h2-only client is refused outright (no_application_protocol).
    let err = coalesce(at, &apps.ca, A, &[b"h2"], B).await.unwrap_err();
    assert!(err.contains("NoApplicationProtocol"), "{err}");
    assert!(
        eventually(Duration::from_secs(5), || outcomes(
            &p,
            "a",
            "terminate",
            "alpn_mismatch"
        ) == 1)
        .await
    );
    // curl asked for HTTP/2 gets HTTP/1.1 from both apps, each from its own.
    let ca_pem = ca_file(&apps.ca);
    for (host, name) in [(A, "a"), (B, "b")] {
        let (ok, out) = curl(at, host, ca_pem.path(), "--http2").await;
        assert!(ok, "{out}");
        assert_eq!(out, format!("hello from {name} over HTTP/1.1\n1.1"));
    }
    assert!(
        !apps.a.seen().iter().any(|h| h.starts_with(B)),
        "{:?}",
        apps.a.seen()
    );
    assert_eq!(apps.a.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forcing_h2_on_a_shared_certificate_lets_coalescing_through_and_check_says_so() {
    // What the rule prevents, shown on the route that opts out of it: an
    // HTTP/2 request for b on a's connection is served by a's enclave.
    let apps = two_apps(Some(&["h2", "http/1.1"])).await;
    let p = proxy(config(&apps.cert.toml()), &apps.specs);
    let got = coalesce(addr(&p), &apps.ca, A, &[b"h2", b"http/1.1"], B).await;
    assert_eq!(got, Ok(Some("hello from a over HTTP/2.0\n".into())));
    assert!(apps.a.seen().iter().any(|h| h.starts_with(B)));
    assert!(apps.b.seen().is_empty());

    let dir = tempfile::tempdir().unwrap();
    write_routes(&dir.path().join("routes.toml"), &apps.specs);
    let cfg = dir.path().join("proxy.toml");
    let text = format!(
        "routes_file = {:?}\nstate_dir = {:?}\n[[listener]]\naddress = \"127.0.0.1:0\"\n{}",
        dir.path().join("routes.toml"),
        dir.path().join("state"),
        apps.cert.toml()
    );
    std::fs::write(&cfg, text).unwrap();
    let (ok, out) = check_binary(&cfg).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("warning: route `a` lists `h2` in its `alpn` although certificate"),
        "{out}"
    );
    assert!(out.contains("(`b`)"), "{out}");
    assert!(
        out.contains("note: route `b`: h2 is not offered, because certificate"),
        "{out}"
    );
    assert!(out.contains("RFC 9113"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_app_with_two_hostnames_or_its_own_certificate_keeps_h2() {
    let ca = Ca::new("platform CA").unwrap();
    let wild = PlatformCert::new(&ca.issue(&["*.apps.example.test"]).unwrap());
    let own = PlatformCert::new(&ca.issue(&["shop.example.test"]).unwrap());
    let enclave_ca = Ca::new("enclave CA").unwrap();
    let (a, leaf_a) = HttpBackend::tls(&enclave_ca, "a").await;
    let (shop, leaf_shop) = HttpBackend::tls(&enclave_ca, "shop").await;
    let specs = [
        // One app, its public and its configuration hostname: one tenant.
        terminate_spec("a", &[A], &[a.addr], pinned(&leaf_a)),
        terminate_spec(
            "a-config",
            &["a-config.apps.example.test"],
            &[a.addr],
            pinned(&leaf_a),
        ),
        // Another app on a certificate of its own.
        terminate_spec(
            "shop",
            &["shop.example.test"],
            &[shop.addr],
            pinned(&leaf_shop),
        ),
    ];
    let p = proxy(config(&format!("{}{}", wild.toml(), own.toml())), &specs);
    let ca_pem = ca_file(&ca);
    for (host, name) in [
        (A, "a"),
        ("a-config.apps.example.test", "a"),
        ("shop.example.test", "shop"),
    ] {
        let (ok, out) = curl(addr(&p), host, ca_pem.path(), "--http2").await;
        assert!(ok, "{out}");
        assert_eq!(out, format!("hello from {name} over HTTP/2.0\n2"), "{host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_added_under_the_wildcard_through_the_api_takes_h2_away_and_its_removal_gives_it_back(
) {
    let apps = two_apps(None).await;
    let live = Live::start(&apps.specs[..1], &apps.cert.toml());
    let ca_pem = ca_file(&apps.ca);
    let version = || async { curl(live.addr(), A, ca_pem.path(), "--http2").await.1 };
    assert_eq!(version().await, "hello from a over HTTP/2.0\n2");
    let put = live.put_route("b", &apps.specs[1]).await;
    assert!(put.status().is_success(), "{}", put.status());
    assert_eq!(version().await, "hello from a over HTTP/1.1\n1.1");
    let del = reqwest::Client::new()
        .delete(live.admin("/routes/b"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(del.status().is_success(), "{}", del.status());
    assert_eq!(version().await, "hello from a over HTTP/2.0\n2");
}
