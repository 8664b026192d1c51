//! 10,000 connections that never finish their hello keep the proxy's memory
//! bounded, and it keeps serving. The proxy runs as its own process (the real
//! binary), so its RSS and file descriptors are its own.

mod common;

use std::time::Duration;

use common::process::{rss_kib, ProxyProcess};
use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_slow_clients_keep_memory_bounded() {
    const SLOW: usize = 10_000;
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["ok.example.test"], "ok").await;
    let proxy = ProxyProcess::spawn(
        e.addr,
        "[timeouts]\nclient_hello = \"60s\"\n[log]\nformat = \"json\"\naccess_log = false\n",
        true,
    )
    .await;
    let (addr, pid) = (proxy.addr, proxy.child.0.id());
    assert_eq!(
        get(addr, "ok.example.test", &ca).await.unwrap().0,
        "hello from ok"
    );
    let before = rss_kib(pid);

    let hello = captured_hello();
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&hello[..10]).await.unwrap();
        slow.push(s);
    }
    // Wait until the proxy holds them all (one fd per accepted socket).
    let held = eventually(Duration::from_secs(60), || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0)
            >= SLOW
    })
    .await;
    assert!(held, "the proxy did not accept all {SLOW} connections");
    // Still serving while they wait.
    assert_eq!(
        get(addr, "ok.example.test", &ca).await.unwrap().0,
        "hello from ok"
    );
    let after = rss_kib(pid);
    let per_conn = (after.saturating_sub(before)) as f64 / SLOW as f64;
    println!("RSS {before} KiB -> {after} KiB with {SLOW} slow clients: {per_conn:.2} KiB each");
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
    let proxy = ProxyProcess::spawn(e.addr, "[log]\nformat = \"json\"\n", false).await;
    let addr = proxy.addr;
    for _ in 0..3 {
        assert_eq!(
            get(addr, "ok.example.test", &ca).await.unwrap().0,
            "hello from ok"
        );
    }
}
