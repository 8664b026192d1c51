//! Hostile clients and load balancers: slowloris, per-client limits, PROXY
//! protocol in both directions, passive health.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_slowloris_connections_do_not_starve_a_normal_client() {
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["ok.example.test"], "ok").await;
    let p = proxy(
        // One client holding 2,000 unrouted connections: the per-client caps
        // and rate (their own tests below) are off, so this is the
        // deadline's test.
        config(
            "[timeouts]\nclient_hello = \"4s\"\n[limits]\nmax_unrouted_per_client = 0\n\
             max_connections_per_client = 0\nclient_new_connections_per_second = 0\n",
        ),
        &[spec("ok", &["ok.example.test"], &[e.addr.to_string()])],
    );
    let hello = captured_hello();
    let mut slow = Vec::with_capacity(2000);
    for i in 0..2000 {
        let mut s = TcpStream::connect(addr(&p)).await.unwrap();
        // Each sends a different prefix of a hello and then trickles nothing.
        s.write_all(&hello[..1 + i % (hello.len() - 1)])
            .await
            .unwrap();
        slow.push(s);
    }
    assert!(eventually(Duration::from_secs(10), || p.open_connections() >= 2000).await);
    // A normal client is served while all 2,000 are held open.
    let started = tokio::time::Instant::now();
    assert_eq!(
        get(addr(&p), "ok.example.test", &ca).await.unwrap().0,
        "hello from ok"
    );
    assert!(
        p.open_connections() >= 2000,
        "slow clients were cut before the deadline"
    );
    // Every slow connection is cut at the one total deadline.
    for s in &mut slow {
        let (_, closed) = read_to_close(s, Duration::from_secs(20)).await;
        assert!(closed);
    }
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(eventually(Duration::from_secs(10), || p.open_connections() == 0).await);
    assert_eq!(outcomes(&p, "(none)", "(none)", "hello_timeout"), 2000);
}

#[tokio::test]
async fn per_client_limit_on_unrouted_connections() {
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["ok.example.test"], "ok").await;
    let p = proxy(
        config("[limits]\nmax_unrouted_per_ip = 3\n"),
        &[spec("ok", &["ok.example.test"], &[e.addr.to_string()])],
    );
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr(&p)).await.unwrap();
        s.write_all(&captured_hello()[..20]).await.unwrap();
        held.push(s);
    }
    assert!(eventually(Duration::from_secs(5), || p.shared.unrouted.clients() == 1).await);
    let mut fourth = TcpStream::connect(addr(&p)).await.unwrap();
    let (_, closed) = read_to_close(&mut fourth, Duration::from_secs(5)).await;
    assert!(
        closed,
        "fourth unrouted connection from one IP must be refused"
    );
    assert!(
        eventually(Duration::from_secs(5), || outcomes(
            &p,
            "(none)",
            "(none)",
            "client_limit"
        ) == 1)
        .await
    );
    // Routed connections do not hold a slot.
    drop(held);
    assert!(eventually(Duration::from_secs(5), || p.shared.unrouted.clients() == 0).await);
    let mut routed = Vec::new();
    for _ in 0..5 {
        routed.push(EchoConn::open(addr(&p), "ok.example.test", &ca).await);
    }
    assert_eq!(
        get(addr(&p), "ok.example.test", &ca).await.unwrap().0,
        "hello from ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_with_a_thousand_idle_connections_leaves_room_for_another() {
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["ok.example.test", CAPTURED_SNI], "ok").await;
    let p = proxy(
        // The caps on what a client holds are this test's; its rate
        // (tests/fairness.rs) is off, or it would refuse most of the 2,000
        // connections opened at once before they could be held.
        config(
            "[limits]\nmax_connections = 1000\nmax_unrouted_per_client = 50\n\
             max_connections_per_client = 100\nclient_new_connections_per_second = 0\n",
        ),
        &[spec(
            "ok",
            &["ok.example.test", CAPTURED_SNI],
            &[e.addr.to_string()],
        )],
    );
    let hello = captured_hello();
    // 127.0.0.2: 1,000 connections that send a whole hello (routed: each
    // then holds a backend socket) and go quiet; 127.0.0.4: 1,000 that never
    // finish one.
    let mut held = Vec::new();
    for _ in 0..1000 {
        let mut s = connect_from([127, 0, 0, 2], addr(&p)).await;
        let _ = s.write_all(&hello).await;
        held.push(s);
    }
    for _ in 0..1000 {
        let mut s = connect_from([127, 0, 0, 4], addr(&p)).await;
        let _ = s.write_all(&hello[..20]).await;
        held.push(s);
    }
    let refused = |outcome| outcomes(&p, "(none)", "(none)", outcome);
    assert!(
        eventually(Duration::from_secs(10), || {
            refused("client_total_limit") == 900 && refused("client_limit") == 950
        })
        .await,
        "refusals: {} over the total cap, {} over the unrouted cap",
        refused("client_total_limit"),
        refused("client_limit"),
    );
    assert_eq!(p.open_connections(), 150);
    // 127.0.0.3 is another client: served at once.
    let mut s = connect_from([127, 0, 0, 3], addr(&p)).await;
    let tls = tokio::time::timeout(Duration::from_secs(1), async {
        let connector = tokio_rustls::TlsConnector::from(ca.client_config(&[b"http/1.1"]));
        let name = rustls::pki_types::ServerName::try_from("ok.example.test").unwrap();
        let mut t = connector.connect(name, &mut s).await.unwrap();
        t.write_all(b"GET / HTTP/1.1\r\nhost: ok.example.test\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        t.read_to_string(&mut answer).await.unwrap();
        answer
    })
    .await
    .expect("a second client waited more than a second");
    assert!(tls.contains("\r\n\r\nhello from ok"), "{tls}");
}

/// A plain TCP backend that records the first bytes of each connection.
async fn recorder() -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let rec = Arc::clone(&rec);
            tokio::spawn(async move {
                let mut all = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all)).await;
                rec.lock().await.push(all);
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn proxy_protocol_v2_is_sent_upstream_only_when_the_route_asks() {
    let (backend, seen) = recorder().await;
    let mut with = spec("with", &[CAPTURED_SNI], &[backend.to_string()]);
    with.proxy_protocol = Some("v2".into());
    let p = proxy(config(""), &[with]);
    let hello = captured_hello();
    let mut s = TcpStream::connect(addr(&p)).await.unwrap();
    let client = s.local_addr().unwrap();
    s.write_all(&hello).await.unwrap();
    s.shutdown().await.unwrap();
    let _ = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            seen.lock().await.len() == 1
        })
        .await
    );
    let got = seen.lock().await[0].clone();
    // Decoded by an independent implementation of the spec (ppp).
    let header = ppp::v2::Header::try_from(got.as_slice()).expect("a v2 header first");
    let len = header.len();
    match header.addresses {
        ppp::v2::Addresses::IPv4(a) => {
            assert_eq!(SocketAddr::from((a.source_address, a.source_port)), client);
            assert_eq!(
                SocketAddr::from((a.destination_address, a.destination_port)),
                addr(&p)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        &got[len..],
        hello.as_slice(),
        "after the header, the stream is untouched"
    );

    // Without the setting, not one byte is added.
    let (backend, seen) = recorder().await;
    let p = proxy(
        config(""),
        &[spec("without", &[CAPTURED_SNI], &[backend.to_string()])],
    );
    let mut s = TcpStream::connect(addr(&p)).await.unwrap();
    s.write_all(&hello).await.unwrap();
    s.shutdown().await.unwrap();
    let _ = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            seen.lock().await.len() == 1
        })
        .await
    );
    assert_eq!(seen.lock().await[0], hello);
}

#[tokio::test]
async fn proxy_protocol_from_a_trusted_balancer_gives_the_client_address() {
    let (backend, seen) = recorder().await;
    let mut r = spec("r", &[CAPTURED_SNI], &[backend.to_string()]);
    r.proxy_protocol = Some("v2".into());
    let listener = "proxy_protocol = true\ntrusted_proxies = [\"127.0.0.0/8\"]\n";
    let cfg = mse_proxy::config::Config::from_toml(
        std::path::Path::new("t.toml"),
        &format!("[[listener]]\naddress = \"127.0.0.1:0\"\n{listener}"),
    )
    .unwrap();
    let p = proxy(cfg, &[r]);
    let hello = captured_hello();
    // v1 from the balancer: the client is 203.0.113.7:40000.
    let mut s = TcpStream::connect(addr(&p)).await.unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 443\r\n")
        .await
        .unwrap();
    s.write_all(&hello).await.unwrap();
    s.shutdown().await.unwrap();
    let _ = read_to_close(&mut s, Duration::from_secs(10)).await;
    // v2 from the balancer, IPv6-mapped IPv4 client: reported as IPv4.
    let (v2, n) = mse_proxy::proxy::proxy_protocol::v2_header(
        "[::ffff:198.51.100.9]:41000".parse().unwrap(),
        "[2001:db8::1]:443".parse().unwrap(),
    );
    let mut s = TcpStream::connect(addr(&p)).await.unwrap();
    s.write_all(&v2[..n]).await.unwrap();
    s.write_all(&hello).await.unwrap();
    s.shutdown().await.unwrap();
    let _ = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            seen.lock().await.len() == 2
        })
        .await
    );
    let mut sources = Vec::new();
    for got in seen.lock().await.iter() {
        let h = ppp::v2::Header::try_from(got.as_slice()).unwrap();
        if let ppp::v2::Addresses::IPv4(a) = h.addresses {
            sources.push(SocketAddr::from((a.source_address, a.source_port)));
        }
    }
    sources.sort();
    assert_eq!(
        sources,
        vec![
            "198.51.100.9:41000".parse::<SocketAddr>().unwrap(),
            "203.0.113.7:40000".parse().unwrap()
        ]
    );
    // The balancer must send a header: a bare hello from it is refused.
    let mut s = TcpStream::connect(addr(&p)).await.unwrap();
    s.write_all(&hello).await.unwrap();
    let (bytes, closed) = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(closed && bytes.is_empty());
    assert!(
        eventually(Duration::from_secs(5), || outcomes(
            &p,
            "(none)",
            "(none)",
            "proxy_header_refused"
        ) == 1)
        .await
    );
}

#[tokio::test]
async fn proxy_header_from_an_untrusted_source_is_refused() {
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["ok.example.test"], "ok").await;
    let cfg = mse_proxy::config::Config::from_toml(
        std::path::Path::new("t.toml"),
        "[[listener]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\"]\n",
    )
    .unwrap();
    let p = proxy(
        cfg,
        &[spec("ok", &["ok.example.test"], &[e.addr.to_string()])],
    );
    let mut s = TcpStream::connect(addr(&p)).await.unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 443\r\n")
        .await
        .unwrap();
    s.write_all(&captured_hello()).await.unwrap();
    let (bytes, closed) = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(closed && bytes.is_empty());
    assert!(
        eventually(Duration::from_secs(5), || outcomes(
            &p,
            "(none)",
            "(none)",
            "proxy_header_refused"
        ) == 1)
        .await
    );
    // The same untrusted client without a header is an ordinary client.
    assert_eq!(
        get(addr(&p), "ok.example.test", &ca).await.unwrap().0,
        "hello from ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backend_is_skipped_for_a_while() {
    let ca = Ca::new("test CA").unwrap();
    let (good, _) = enclave(&ca, &["app.example.test"], "good").await;
    let dead = closed_port().await;
    let p = proxy(
        config("[health]\nfailure_cooldown = \"1h\"\n"),
        &[spec(
            "app",
            &["app.example.test"],
            &[dead.to_string(), good.addr.to_string()],
        )],
    );
    for _ in 0..5 {
        assert_eq!(
            get(addr(&p), "app.example.test", &ca).await.unwrap().0,
            "hello from good"
        );
    }
    // Only the first connection tried the dead backend; later ones skipped it.
    assert_eq!(p.shared.health.cooling(), 1);
    let failures = p
        .shared
        .metrics
        .connect_failures
        .with_label_values(&["app"])
        .get();
    assert_eq!(failures, 1, "the dead backend was tried {failures} times");
}
