//! What an idle terminated connection costs the proxy in resident memory
//! (issue 19): a measurement, not a check, so `#[ignore]`d. Run it against
//! a release build, e.g.
//!
//! ```text
//! cargo build --release
//! MSE_PROXY_BIN=target/release/mse-proxy \
//!   cargo test --test idle_terminate_memory -- --ignored --nocapture
//! ```
//!
//! (`MSE_PROXY_BIN` unset: the test profile's binary.) A fresh proxy with
//! one terminate route to a TLS stand-in enclave (pinned), warmed with a few
//! hundred connections opened and closed; then `VmRSS` before, `IDLE_CONNS`
//! (default 2,000) connections opened one after another through it
//! (handshakes done on both sides; with `IDLE_PING=1` one echo round trip
//! each too) and held, and `VmRSS` again 2 s after the last.

mod common;

use std::time::Duration;

use common::process::{rss_kib, write_config, ProxyProcess};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored against a release build"]
async fn idle_terminated_connections_memory() {
    const HOST: &str = "idle.apps.example.test";
    let n: usize = std::env::var("IDLE_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let ping = std::env::var("IDLE_PING").is_ok_and(|v| v == "1");
    let platform_ca = Ca::new("platform CA").unwrap();
    let cert = PlatformCert::new(&platform_ca.issue(&[HOST]).unwrap());
    let enclave_ca = Ca::new("enclave CA").unwrap();
    let (e, leaf) = enclave(&enclave_ca, &["enclave.internal"], "echo").await;
    let dir = tempfile::tempdir().unwrap();
    write_routes(
        &dir.path().join("routes.toml"),
        &[terminate_spec("idle", &[HOST], &[e.addr], pinned(&leaf))],
    );
    let cfg = write_config(
        dir.path(),
        &format!(
            "routes_file = \"routes.toml\"\n[limits]\nmax_connections = {}\n\
             max_unrouted_per_client = 0\nmax_connections_per_client = 0\n\
             client_new_connections_per_second = 0\nroute_new_connections_per_second = 0\n{}",
            n + 100,
            cert.toml()
        ),
    );
    // The binary to measure: MSE_PROXY_BIN through a wrapper that execs it
    // (same pid) in place of the one the harness names.
    let proxy = match std::env::var("MSE_PROXY_BIN") {
        Ok(bin) => {
            let script = format!("shift; exec {bin:?} \"$@\"");
            ProxyProcess::start_under(&["sh", "-c", &script, "sh"], &cfg).await
        }
        Err(_) => ProxyProcess::start(&cfg).await,
    };
    let pid = proxy.pid();
    for _ in 0..300 {
        let mut c = EchoConn::open(proxy.addr, HOST, &platform_ca).await;
        assert!(c.ping("warm").await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // IDLE_PAUSE=N: N seconds to attach a heap profiler here, and as long
    // again once the connections are open.
    let pause: u64 = std::env::var("IDLE_PAUSE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if pause > 0 {
        println!("proxy pid {pid}");
        tokio::time::sleep(Duration::from_secs(pause)).await;
    }
    let before = rss_kib(pid);
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = tls_connect(proxy.addr, HOST, &platform_ca).await.unwrap();
        if ping {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            c.write_all(b"ping").await.unwrap();
            let mut back = [0u8; 4];
            c.read_exact(&mut back).await.unwrap();
        }
        held.push(c);
        if i % 500 == 499 {
            println!("{} open", i + 1);
        }
    }
    tokio::time::sleep(Duration::from_secs(2 + pause)).await;
    let after = rss_kib(pid);
    // Still served: the last one echoes.
    let mut last = EchoConn(held.pop().unwrap());
    assert!(last.ping("still there").await);
    let per = (after - before) as f64 / n as f64;
    println!(
        "idle terminated connections: {n} (ping: {ping}); VmRSS {before} KiB -> {after} KiB: {per:.2} KiB each"
    );
}
