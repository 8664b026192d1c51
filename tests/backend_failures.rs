//! Failing backends: each failure is its own outcome, the client is closed
//! promptly, and nothing is left behind (open connections and sockets back
//! to their baseline). One test in its own binary, so the socket count is not
//! disturbed by other tests running alongside.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A listener whose accept queue is full and never drained: further SYNs
/// are dropped, so a connect to it hangs until the caller's timeout.
fn black_hole() -> (Socket, Vec<std::net::TcpStream>, SocketAddr) {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(c) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            fillers.push(c);
        }
    }
    (s, fillers, addr)
}

/// A backend that takes the connection, reads a little, then resets it.
async fn resetter() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf).await;
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                drop(s);
            });
        }
    });
    addr
}

/// Sends a hello for `sni` and waits for the proxy to close the connection.
async fn try_once(proxy: SocketAddr) -> bool {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(&captured_hello()).await.unwrap();
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(10)).await;
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_backend_failure_is_a_distinct_outcome_and_leaves_nothing_behind() {
    let dns = Dnsmasq::start(&[
        "--address=/missing.test/",
        "--host-record=node.test,127.0.0.1",
    ])
    .await;
    let (_hole, _fillers, hole) = black_hole();
    let refused = closed_port().await;
    let reset = resetter().await;
    let dead_dns = closed_port().await;

    // One proxy per DNS setup; routes all claim the captured hello's SNI, so
    // each scenario is its own proxy with one route.
    let scenarios: Vec<(&str, String, String)> = vec![
        ("upstream_refused", refused.to_string(), String::new()),
        ("upstream_timeout", hole.to_string(), String::new()),
        ("upstream_error", reset.to_string(), String::new()),
        (
            "dns_error",
            format!("missing.test:{}", reset.port()),
            dns.addr.to_string(),
        ),
        (
            "dns_unavailable",
            format!("node.test:{}", reset.port()),
            dead_dns.to_string(),
        ),
    ];
    for (want, backend, ns) in scenarios {
        let dns_cfg = if ns.is_empty() {
            String::new()
        } else {
            format!("[dns]\nnameservers = [\"{ns}\"]\ntimeout = \"300ms\"\n")
        };
        let p = proxy(
            config(&format!(
                "[timeouts]\nupstream_connect = \"300ms\"\n{dns_cfg}"
            )),
            &[spec("r", &[CAPTURED_SNI], std::slice::from_ref(&backend))],
        );
        // Warm up lazily created state (DNS sockets, pools), then take the baseline.
        assert!(
            try_once(addr(&p)).await,
            "{want}: warm-up connection not closed"
        );
        assert!(eventually(Duration::from_secs(5), || p.open_connections() == 0).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sockets = open_sockets();
        for _ in 0..5 {
            assert!(try_once(addr(&p)).await, "{want}: client not closed");
        }
        assert!(
            eventually(Duration::from_secs(5), || outcomes(
                &p,
                "r",
                "passthrough",
                want
            ) == 6)
            .await,
            "{want} via {backend}: counted {}",
            outcomes(&p, "r", "passthrough", want)
        );
        assert!(
            eventually(Duration::from_secs(5), || p.open_connections() == 0).await,
            "{want}: connections left open"
        );
        assert!(
            eventually(Duration::from_secs(5), || open_sockets() <= sockets).await,
            "{want}: {} sockets now, {sockets} before",
            open_sockets()
        );
        let cut = p.shutdown(Duration::from_secs(1)).await;
        assert_eq!(cut, 0);
    }
}
