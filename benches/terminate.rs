//! New TLS connections per second through a terminate route, against direct
//! TLS connections to the same backend, in the same run.
//!
//! Decision this informs: what terminating costs per new connection (the
//! proxy does a full server handshake with the client, then a client
//! handshake to the enclave, which it may resume), so that operators can size
//! ingress cores for any-trust apps against passthrough, and so that a change
//! that makes the terminate path slower shows up as a lower ratio.
//!
//! Each iteration: TCP connect, a full TLS 1.3 handshake (client resumption
//! disabled; rustls defaults: X25519MLKEM768, ECDSA P-256 certificates), one
//! HTTP/1.1 GET, read to the backend's close. The backend is the stand-in
//! enclave; the terminate route pins its certificate.
//!
//! After the criterion groups (one connection at a time, latency-bound), a
//! second measurement runs `PARALLEL` connections at once, alternating the
//! two paths in rounds, and prints connections per second and the ratio.
//!
//! Run: `cargo bench --bench terminate` (add `-- --quick` for a short run).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mse_proxy::config::routes::{validate_all, RouteSpec};
use mse_proxy::config::terminate::UpstreamSpec;
use mse_proxy::config::Config;
use mse_proxy::config::ControlLimits;
use mse_proxy::standin::{Ca, Enclave};
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio_rustls::TlsConnector;

const HOST: &str = "bench.apps.example.test";
/// Connections in flight at once in the throughput comparison.
const PARALLEL: usize = 16;
/// Connections per path per round, and rounds.
const PER_ROUND: usize = 400;
const ROUNDS: usize = 3;

/// One path to the backend: where to connect and whom to trust.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    connector: TlsConnector,
}

/// A client config trusting `ca`, offering HTTP/1.1, never resuming.
fn client(ca: &Ca) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.resumption = Resumption::disabled();
    TlsConnector::from(Arc::new(cfg))
}

async fn one_request(p: &Target) {
    let tcp = TcpStream::connect(p.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::try_from(HOST).unwrap();
    let mut tls = p.connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::with_capacity(256);
    tls.read_to_end(&mut answer).await.unwrap();
    assert!(answer.ends_with(b"hello from bench\n"));
}

/// Everything the bench runs against; dropping it stops the servers.
struct Setup {
    direct: Target,
    terminated: Target,
    _enclave: Enclave,
    _proxy: mse_proxy::server::Server,
    _dir: tempfile::TempDir,
}

fn setup(rt: &Runtime) -> Setup {
    rt.block_on(async {
        let enclave_ca = Ca::new("enclave CA").unwrap();
        let leaf = enclave_ca.issue(&[HOST]).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let enclave =
            Enclave::spawn(l, "bench", leaf.server_config(&[b"http/1.1"]).unwrap()).unwrap();

        let platform_ca = Ca::new("platform CA").unwrap();
        let platform = platform_ca.issue(&["*.apps.example.test"]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("p.crt"), dir.path().join("p.key"));
        std::fs::write(&cert, &platform.cert_pem).unwrap();
        std::fs::write(&key, &platform.key_pem).unwrap();
        let text = format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\n[log]\naccess_log = false\n\
             [limits]\nclient_new_connections_per_second = 0\nroute_new_connections_per_second = 0\n\
             [[certificate]]\ncert = {cert:?}\nkey = {key:?}\n"
        );
        let mut config = Config::from_toml(Path::new("bench.toml"), &text).unwrap();
        config.state_dir = None; // in memory: no state/ in the working directory
        let spec = RouteSpec::terminate(
            "bench",
            &[HOST],
            &[enclave.addr],
            UpstreamSpec {
                pin_sha256: Some(mse_proxy::apps::derive::sha256_hex(leaf.cert_der.as_ref())),
                ..Default::default()
            },
        );
        let routes = validate_all(
            Path::new("bench"),
            &[spec],
            "route",
            &ControlLimits::default(),
        )
        .unwrap();
        let proxy = mse_proxy::server::start(config, routes).unwrap();
        Setup {
            direct: Target {
                addr: enclave.addr,
                connector: client(&enclave_ca),
            },
            terminated: Target {
                addr: proxy.local_addrs[0],
                connector: client(&platform_ca),
            },
            _enclave: enclave,
            _proxy: proxy,
            _dir: dir,
        }
    })
}

/// `n` connections, `PARALLEL` at a time; returns the wall time.
async fn burst(p: &Target, n: usize) -> Duration {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for w in 0..PARALLEL {
        let p = p.clone();
        let mine = n / PARALLEL + usize::from(w < n % PARALLEL);
        set.spawn(async move {
            for _ in 0..mine {
                one_request(&p).await;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = setup(&rt);

    let mut g = c.benchmark_group("new_tls_connection");
    g.throughput(Throughput::Elements(1));
    g.bench_function("direct_to_backend", |b| {
        b.to_async(&rt).iter(|| one_request(&s.direct))
    });
    g.bench_function("through_terminate_route", |b| {
        b.to_async(&rt).iter(|| one_request(&s.terminated))
    });
    g.finish();

    // Throughput with connections in flight, the two paths alternating so
    // that machine noise falls on both alike.
    let (mut direct, mut terminated) = (Duration::ZERO, Duration::ZERO);
    rt.block_on(async {
        burst(&s.direct, PARALLEL).await;
        burst(&s.terminated, PARALLEL).await;
        for _ in 0..ROUNDS {
            direct += burst(&s.direct, PER_ROUND).await;
            terminated += burst(&s.terminated, PER_ROUND).await;
        }
    });
    let total = (PER_ROUND * ROUNDS) as f64;
    let (d, t) = (
        total / direct.as_secs_f64(),
        total / terminated.as_secs_f64(),
    );
    println!(
        "new TLS connections/s, {PARALLEL} in flight, {} each: direct {d:.0}/s, \
         through terminate route {t:.0}/s, ratio {:.2}",
        PER_ROUND * ROUNDS,
        t / d
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
