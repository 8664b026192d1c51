//! Passthrough relay: the default (`[relay] splice = true`: small reads
//! copied, bulk runs spliced) against always copying, in one run.
//!
//! Decision it informs: whether bulk runs should use splice(2) (no copy
//! through user space). Small request/response round trips take the copy
//! path in both, so there the two should agree within the noise; a gap
//! there would mean the switch itself costs. Both run through the real
//! proxy on loopback, with a plain TCP backend so no TLS cost hides the
//! difference.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mse_proxy::config::routes::{validate_all, RouteSpec};
use mse_proxy::config::Config;
use mse_proxy::config::ControlLimits;
use mse_proxy::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const HELLO: &[u8] = include_bytes!("../tests/data/clienthello-curl-openssl.bin");

/// A backend that echoes everything back.
async fn echo_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

fn proxy(backend: SocketAddr, splice: bool) -> Server {
    let mut cfg = Config::from_toml(
        Path::new("bench.toml"),
        &format!("[relay]\nsplice = {splice}\n[log]\naccess_log = false\n\
                  [limits]\nclient_new_connections_per_second = 0\nroute_new_connections_per_second = 0\n\
                  [[listener]]\naddress = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    cfg.state_dir = None; // in memory: no state/ in the working directory
    let spec = RouteSpec::passthrough("bench", &["app.example.test"], &[backend]);
    let routes = validate_all(
        Path::new("bench"),
        &[spec],
        "route",
        &ControlLimits::default(),
    )
    .unwrap();
    mse_proxy::server::start(cfg, routes).unwrap()
}

/// A connection through the proxy with the hello already echoed back.
async fn connect(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(HELLO).await.unwrap();
    let mut back = vec![0u8; HELLO.len()];
    s.read_exact(&mut back).await.unwrap();
    s
}

fn relay(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let (backend, copy, splice) = rt.block_on(async {
        let b = echo_backend().await;
        (b, proxy(b, false), proxy(b, true))
    });
    let _ = backend;
    let targets = [
        ("copy", copy.local_addrs[0]),
        ("splice", splice.local_addrs[0]),
    ];

    const BULK: usize = 64 * 1024 * 1024;
    let mut g = c.benchmark_group("bulk_64MiB_echo");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Bytes(2 * BULK as u64));
    for (name, addr) in targets {
        g.bench_with_input(BenchmarkId::from_parameter(name), &addr, |b, &addr| {
            b.to_async(&rt).iter(|| async move {
                let s = connect(addr).await;
                let (mut r, mut w) = s.into_split();
                let writer = tokio::spawn(async move {
                    let chunk = vec![7u8; 256 * 1024];
                    for _ in 0..BULK / chunk.len() {
                        w.write_all(&chunk).await.unwrap();
                    }
                    w.shutdown().await.unwrap();
                });
                let mut buf = vec![0u8; 256 * 1024];
                let mut got = 0;
                while got < BULK {
                    let n = r.read(&mut buf).await.unwrap();
                    assert!(n > 0);
                    got += n;
                }
                writer.await.unwrap();
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("ping_pong_100B");
    g.throughput(Throughput::Elements(1));
    for (name, addr) in targets {
        let conn = rt.block_on(connect(addr));
        let conn = std::sync::Arc::new(tokio::sync::Mutex::new(conn));
        g.bench_with_input(BenchmarkId::from_parameter(name), &conn, |b, conn| {
            b.to_async(&rt).iter(|| async {
                let mut s = conn.lock().await;
                s.write_all(&[1u8; 100]).await.unwrap();
                let mut back = [0u8; 100];
                s.read_exact(&mut back).await.unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, relay);
criterion_main!(benches);
