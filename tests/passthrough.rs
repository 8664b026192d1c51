//! Passthrough routing end to end: real TLS clients, the proxy in-process,
//! stand-in rustls enclaves behind it.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn two_hostnames_reach_two_backends_with_their_own_certificates() {
    let ca = Ca::new("test CA").unwrap();
    let (a, leaf_a) = enclave(&ca, &["a.example.test"], "enclave-a").await;
    let (b, leaf_b) = enclave(&ca, &["b.example.test"], "enclave-b").await;
    let p = proxy(
        config(""),
        &[
            spec("a", &["a.example.test"], &[a.addr.to_string()]),
            spec("b", &["b.example.test"], &[b.addr.to_string()]),
        ],
    );
    let (body, cert) = get(addr(&p), "a.example.test", &ca).await.unwrap();
    assert_eq!(body, "hello from enclave-a");
    assert_eq!(
        cert,
        leaf_a.cert_der.as_ref(),
        "client must see the enclave's own certificate"
    );
    let (body, cert) = get(addr(&p), "B.Example.Test", &ca).await.unwrap();
    assert_eq!(body, "hello from enclave-b");
    assert_eq!(cert, leaf_b.cert_der.as_ref());
    assert_eq!((a.handshakes(), b.handshakes()), (1, 1));
}

#[tokio::test]
async fn wildcard_route_matches_one_label_and_exact_wins() {
    let ca = Ca::new("test CA").unwrap();
    let (w, _) = enclave(&ca, &["*.apps.example.test"], "wild").await;
    let (x, _) = enclave(&ca, &["special.apps.example.test"], "exact").await;
    let p = proxy(
        config(""),
        &[
            spec("wild", &["*.apps.example.test"], &[w.addr.to_string()]),
            spec(
                "exact",
                &["special.apps.example.test"],
                &[x.addr.to_string()],
            ),
        ],
    );
    assert_eq!(
        get(addr(&p), "81152fe21315.apps.example.test", &ca)
            .await
            .unwrap()
            .0,
        "hello from wild"
    );
    assert_eq!(
        get(addr(&p), "special.apps.example.test", &ca)
            .await
            .unwrap()
            .0,
        "hello from exact"
    );
    // Two extra labels: not covered by the one-label wildcard, refused.
    let err = get(addr(&p), "a.b.apps.example.test", &ca)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("UnrecognisedName"), "{err}");
}

#[tokio::test]
async fn unknown_sni_gets_unrecognized_name_alert() {
    let ca = Ca::new("test CA").unwrap();
    let (a, _) = enclave(&ca, &["a.example.test"], "a").await;
    let p = proxy(
        config(""),
        &[spec("a", &["a.example.test"], &[a.addr.to_string()])],
    );
    let err = get(addr(&p), "nope.example.test", &ca).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("received fatal alert: UnrecognisedName"),
        "rustls should report the alert, got: {err}"
    );
    // And a real OpenSSL client reports the same alert.
    let (_, out) = run_tool(
        "openssl",
        &[
            "s_client".into(),
            "-connect".into(),
            addr(&p).to_string(),
            "-servername".into(),
            "nope.example.test".into(),
        ],
        true,
    )
    .await;
    assert!(out.contains("unrecognized name"), "openssl output:\n{out}");
    assert_eq!(a.handshakes(), 0);
}

#[tokio::test]
async fn unknown_sni_close_action_closes_without_alert() {
    let p = proxy(config("[refusal]\nunknown_sni = \"close\"\n"), &[]);
    let mut s = TcpStream::connect(addr(&p)).await.unwrap();
    s.write_all(&captured_hello()).await.unwrap();
    let (bytes, closed) = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(closed);
    assert!(
        bytes.is_empty(),
        "close action sends nothing, got {bytes:?}"
    );
}

#[tokio::test]
async fn curl_gets_the_enclave_answer_through_the_proxy() {
    let ca = Ca::new("test CA").unwrap();
    let (a, _) = enclave(&ca, &["app.example.test"], "curl-enclave").await;
    let p = proxy(
        config(""),
        &[spec("a", &["app.example.test"], &[a.addr.to_string()])],
    );
    let ca_pem = ca_file(&ca);
    let port = addr(&p).port();
    let (ok, out) = run_tool(
        "curl",
        &[
            "-sS".into(),
            "--cacert".into(),
            ca_pem.path().display().to_string(),
            "--resolve".into(),
            format!("app.example.test:{port}:127.0.0.1"),
            format!("https://app.example.test:{port}/"),
        ],
        true,
    )
    .await;
    assert!(ok, "curl failed:\n{out}");
    assert_eq!(out.trim(), "hello from curl-enclave");
}

#[tokio::test]
async fn failover_to_second_backend_when_first_refuses() {
    let ca = Ca::new("test CA").unwrap();
    let (b, _) = enclave(&ca, &["app.example.test"], "second").await;
    let dead = closed_port().await;
    let p = proxy(
        config(""),
        &[spec(
            "a",
            &["app.example.test"],
            &[dead.to_string(), b.addr.to_string()],
        )],
    );
    assert_eq!(
        get(addr(&p), "app.example.test", &ca).await.unwrap().0,
        "hello from second"
    );
}

#[tokio::test]
async fn all_backends_down_closes_the_client() {
    let dead = closed_port().await;
    let p = proxy(
        config(""),
        &[spec("a", &[CAPTURED_SNI], &[dead.to_string()])],
    );
    let mut s = TcpStream::connect(addr(&p)).await.unwrap();
    s.write_all(&captured_hello()).await.unwrap();
    let (bytes, closed) = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(closed && bytes.is_empty());
    assert!(eventually(Duration::from_secs(5), || p.open_connections() == 0).await);
}

/// A plain TCP backend that reads until EOF, then answers with how much it
/// got: it can only answer if the proxy passed the client's half-close on
/// and kept the other direction open.
#[tokio::test]
async fn half_close_passes_eof_and_keeps_the_other_direction() {
    half_close("[relay]\nsplice = true\n").await;
    half_close("[relay]\nsplice = false\n").await;
}

async fn half_close(relay: &str) {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let baddr = backend.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = backend.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        // The other direction still flows after the client's EOF.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.write_all(format!("got {} bytes\n", got.len()).as_bytes())
                .await
                .unwrap();
        }
    });
    let p = proxy(
        config(relay),
        &[spec("a", &[CAPTURED_SNI], &[baddr.to_string()])],
    );
    let hello = captured_hello();
    let mut s = TcpStream::connect(addr(&p)).await.unwrap();
    s.write_all(&hello).await.unwrap();
    s.write_all(b"0123456789").await.unwrap();
    s.shutdown().await.unwrap();
    let (bytes, closed) = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(closed);
    let want = format!("got {} bytes\n", hello.len() + 10).repeat(3);
    assert_eq!(String::from_utf8_lossy(&bytes), want);
}

fn xorshift(state: &mut u64, buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let b = state.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_256_mib_byte_exact_both_ways_with_splice() {
    transfer_256_mib("[relay]\nsplice = true\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_256_mib_byte_exact_both_ways_with_buffer_copy() {
    transfer_256_mib("[relay]\nsplice = false\n").await;
}

async fn transfer_256_mib(relay: &str) {
    const TOTAL: usize = 256 * 1024 * 1024;
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["bulk.example.test"], "bulk").await;
    let p = proxy(
        config(relay),
        &[spec("bulk", &["bulk.example.test"], &[e.addr.to_string()])],
    );
    let tls = tls_connect(addr(&p), "bulk.example.test", &ca)
        .await
        .unwrap();
    let (mut rd, mut wr) = tokio::io::split(tls);
    let writer = tokio::spawn(async move {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut buf = vec![0u8; 256 * 1024];
        let mut sent = 0;
        while sent < TOTAL {
            xorshift(&mut state, &mut buf);
            wr.write_all(&buf).await.unwrap();
            ctx.update(&buf);
            sent += buf.len();
        }
        wr.shutdown().await.unwrap();
        ctx.finish().as_ref().to_vec()
    });
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0usize;
    let read = tokio::time::timeout(Duration::from_secs(240), async {
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
    let sent_hash = writer.await.unwrap();
    assert_eq!(got, TOTAL);
    assert_eq!(
        ctx.finish().as_ref(),
        sent_hash.as_slice(),
        "echoed bytes differ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_connections_all_succeed() {
    let ca = Arc::new(Ca::new("test CA").unwrap());
    let (e, _) = enclave(&ca, &["many.example.test"], "many").await;
    let p = proxy(
        // One client (loopback) opens all 500 at once: the per-client cap on
        // connections whose hello is not in yet (256) would refuse some,
        // as it should a real client doing so; here it is not the subject.
        config("[limits]\nmax_unrouted_per_client = 1000"),
        &[spec("many", &["many.example.test"], &[e.addr.to_string()])],
    );
    let pa = addr(&p);
    // Open all 500 first, holding each, so they are truly concurrent.
    let barrier = Arc::new(tokio::sync::Barrier::new(500));
    let mut tasks = Vec::new();
    for i in 0..500 {
        let ca = Arc::clone(&ca);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            let mut tls = tls_connect(pa, "many.example.test", &ca).await?;
            // Bounded: one connection that fails must not hold the rest.
            tokio::time::timeout(Duration::from_secs(60), barrier.wait())
                .await
                .map_err(|_| std::io::Error::other("not every connection got through"))?;
            let msg = format!("message {i}");
            tls.write_all(msg.as_bytes()).await?;
            let mut back = vec![0u8; msg.len()];
            tls.read_exact(&mut back).await?;
            assert_eq!(back, msg.as_bytes());
            Ok::<_, std::io::Error>(())
        }));
    }
    let mut ok = 0;
    let mut bad = std::collections::BTreeMap::new();
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(120), t).await {
            Ok(Ok(Ok(()))) => ok += 1,
            other => *bad.entry(format!("{other:?}")).or_insert(0) += 1,
        }
    }
    assert!(bad.is_empty(), "ok {ok}, failed: {bad:?}");
    assert_eq!(ok, 500);
    assert_eq!(e.handshakes(), 500);
}

/// Re-frames the handshake payload of `hello` (one record) into records of
/// the given payload sizes, the last taking the rest.
fn reframe(hello: &[u8], sizes: &[usize]) -> Vec<u8> {
    let payload = &hello[5..];
    let mut out = Vec::new();
    let mut at = 0;
    for (i, &sz) in sizes.iter().enumerate() {
        let end = if i + 1 == sizes.len() {
            payload.len()
        } else {
            (at + sz).min(payload.len())
        };
        let frag = &payload[at..end];
        out.extend_from_slice(&[0x16, hello[1], hello[2]]);
        out.extend_from_slice(&(frag.len() as u16).to_be_bytes());
        out.extend_from_slice(frag);
        at = end;
    }
    out
}

/// A real rustls handshake whose ClientHello goes out split over three TLS
/// records and one byte per TCP write, then continues normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_in_three_records_one_byte_per_write_still_routes() {
    let ca = Ca::new("test CA").unwrap();
    let (e, leaf) = enclave(&ca, &["split.example.test"], "split").await;
    let p = proxy(
        config(""),
        &[spec(
            "split",
            &["split.example.test"],
            &[e.addr.to_string()],
        )],
    );
    let pa = addr(&p);
    let client_cfg = ca.client_config(&[b"http/1.1"]);
    let leaf_der = leaf.cert_der.as_ref().to_vec();
    let body = tokio::task::spawn_blocking(move || {
        let name = rustls::pki_types::ServerName::try_from("split.example.test").unwrap();
        let mut conn = rustls::ClientConnection::new(client_cfg, name).unwrap();
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).unwrap();
        let framed = reframe(&hello, &[100, 150, 0]);
        assert_eq!(framed.len(), hello.len() + 10);
        let mut sock = std::net::TcpStream::connect(pa).unwrap();
        sock.set_nodelay(true).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        for b in &framed {
            sock.write_all(std::slice::from_ref(b)).unwrap();
        }
        let mut tls = rustls::StreamOwned::new(conn, sock);
        tls.write_all(b"GET / HTTP/1.1\r\nhost: split.example.test\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        let _ = tls.read_to_string(&mut answer);
        let seen = tls.conn.peer_certificates().unwrap()[0].as_ref().to_vec();
        assert_eq!(seen, leaf_der);
        answer
    })
    .await
    .unwrap();
    assert!(body.ends_with("hello from split\n"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_half_hello_is_cut_at_the_deadline_while_others_are_served() {
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["ok.example.test"], "ok").await;
    let p = proxy(
        config("[timeouts]\nclient_hello = \"1s\"\n"),
        &[spec("ok", &["ok.example.test"], &[e.addr.to_string()])],
    );
    let hello = captured_hello();
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(addr(&p)).await.unwrap();
        s.write_all(&hello[..hello.len() / 2]).await.unwrap();
        stalled.push(s);
    }
    // Others are served while the stalled ones wait.
    for _ in 0..5 {
        assert_eq!(
            get(addr(&p), "ok.example.test", &ca).await.unwrap().0,
            "hello from ok"
        );
    }
    let started = tokio::time::Instant::now();
    for s in &mut stalled {
        let (bytes, closed) = read_to_close(s, Duration::from_secs(10)).await;
        assert!(closed, "stalled client was not cut");
        assert!(bytes.is_empty());
    }
    // Cut by the deadline, not by the 10 s bound of this test.
    assert!(started.elapsed() < Duration::from_secs(9));
    assert!(eventually(Duration::from_secs(5), || p.open_connections() == 0).await);
}

#[tokio::test]
async fn trickled_hello_cannot_stretch_the_deadline() {
    let p = proxy(config("[timeouts]\nclient_hello = \"1s\"\n"), &[]);
    let hello = captured_hello();
    let mut s = TcpStream::connect(addr(&p)).await.unwrap();
    let started = tokio::time::Instant::now();
    // One byte every 100 ms would take minutes; the deadline is total.
    let mut cut = false;
    for b in hello.iter().take(100) {
        if s.write_all(std::slice::from_ref(b)).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut probe)).await
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "trickling client was never cut");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn not_tls_is_closed() {
    let p = proxy(config(""), &[]);
    let mut s = TcpStream::connect(addr(&p)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (bytes, closed) = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(closed && bytes.is_empty());
}

#[tokio::test]
async fn no_sni_uses_the_default_route_or_is_refused() {
    let ca = Ca::new("test CA").unwrap();
    // rustls sends no SNI when connecting to an IP address; the stand-in's
    // certificate names that IP so the whole handshake can complete.
    let (e, _) = enclave(&ca, &["default.example.test", "127.0.0.1"], "default").await;
    let routes = [spec(
        "default",
        &["default.example.test"],
        &[e.addr.to_string()],
    )];
    let with_default = proxy(config("[refusal]\nno_sni_route = \"default\"\n"), &routes);
    let without = proxy(config(""), &routes);
    assert_eq!(
        get(addr(&with_default), "127.0.0.1", &ca).await.unwrap().0,
        "hello from default"
    );
    let err = get(addr(&without), "127.0.0.1", &ca).await.unwrap_err();
    assert!(err.to_string().contains("UnrecognisedName"), "{err}");
    assert_eq!(e.handshakes(), 1);
}

#[tokio::test]
async fn connection_limit_closes_extra_connections() {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let baddr = backend.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = backend.accept().await.unwrap();
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
            });
        }
    });
    let p = proxy(
        config("[limits]\nmax_connections = 2\n"),
        &[spec("a", &[CAPTURED_SNI], &[baddr.to_string()])],
    );
    let hello = captured_hello();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr(&p)).await.unwrap();
        s.write_all(&hello).await.unwrap();
        held.push(s);
    }
    assert!(eventually(Duration::from_secs(5), || p.open_connections() == 2).await);
    let mut third = TcpStream::connect(addr(&p)).await.unwrap();
    let (_, closed) = read_to_close(&mut third, Duration::from_secs(10)).await;
    assert!(closed, "over-limit connection must be closed");
    drop(held);
    assert!(eventually(Duration::from_secs(5), || p.open_connections() == 0).await);
}
