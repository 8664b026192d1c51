//! Up to 10,000 connections (as many as the descriptors allow) that never
//! finish their hello keep the proxy's memory bounded, and it keeps serving. The proxy runs as its own process (the real
//! binary), so its RSS and file descriptors are its own.

mod common;

use std::time::Duration;

use common::process::{
    nofile, one_client_limits, proxy_to_enclave, rss_kib, write_config_with_route, ProxyProcess,
};
use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_slow_clients_keep_memory_bounded() {
    // As many as the descriptors allow, up to 10,000: a connection may need
    // two, and the proxy inherits this process's hard limit. One client
    // (this test) opens them all, so the per-client caps are off.
    let fit = (nofile(std::process::id()).1.saturating_sub(256) / 2) as usize - 16;
    let slow_n = fit.min(10_000);
    assert!(
        slow_n >= 5_000,
        "too few file descriptors for the test: {fit}"
    );
    let (ca, _e, _dir, proxy) = proxy_to_enclave(&format!(
        "workers = 1\n[timeouts]\nclient_hello = \"60s\"\n{}",
        one_client_limits(slow_n + 8)
    ))
    .await;
    let (addr, pid) = (proxy.addr, proxy.pid());
    assert_eq!(
        get(addr, "ok.example.test", &ca).await.unwrap().0,
        "hello from ok"
    );
    let before = rss_kib(pid);

    let hello = captured_hello();
    let mut slow = Vec::with_capacity(slow_n);
    for _ in 0..slow_n {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&hello[..10]).await.unwrap();
        slow.push(s);
    }
    // Wait until the proxy holds them all (one fd per accepted socket).
    let held = eventually(Duration::from_secs(60), || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0)
            >= slow_n
    })
    .await;
    assert!(held, "the proxy did not accept all {slow_n} connections");
    // Still serving while they wait.
    assert_eq!(
        get(addr, "ok.example.test", &ca).await.unwrap().0,
        "hello from ok"
    );
    let after = rss_kib(pid);
    let per_conn = (after.saturating_sub(before)) as f64 / slow_n as f64;
    println!("RSS {before} KiB -> {after} KiB with {slow_n} slow clients: {per_conn:.2} KiB each");
    assert!(
        per_conn < 16.0,
        "{per_conn:.2} KiB per unfinished hello: memory is not bounded by a small per-connection cost"
    );
    drop(slow);
}

/// A proxy whose log pipe is closed by the reader keeps serving: a broken
/// log destination must not take connections down with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_serving_after_its_log_pipe_closes() {
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["ok.example.test"], "ok").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config_with_route(dir.path(), e.addr, "workers = 1\n");
    let proxy = ProxyProcess::start_with(&[], &cfg, false).await;
    let addr = proxy.addr;
    for _ in 0..3 {
        assert_eq!(
            get(addr, "ok.example.test", &ca).await.unwrap().0,
            "hello from ok"
        );
    }
}
