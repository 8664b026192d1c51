//! File descriptors: the proxy raises its soft `RLIMIT_NOFILE` to the hard
//! limit at start, refuses a connection limit the descriptors cannot hold,
//! an upstream connect that fails for want of descriptors is the proxy's
//! own outcome, not a backend failure, and a bulk transfer with no
//! descriptor left for a splice pipe is copied instead of cut. The proxy
//! runs as its own
//! process (the real binary) so that its limits are its own; `prlimit`
//! (util-linux) sets them.

mod common;

use std::process::Command;
use std::time::Duration;

use common::process::{nofile, write_config_with_route, ProxyProcess};
use common::*;

/// The lowest descriptor number the process has free: the next one it
/// opens gets it (the limit bounds numbers, not a count).
fn lowest_free_fd(pid: u32) -> u64 {
    let used: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).unwrap()
}

fn prlimit(pid: u32, soft: u64, hard: u64) {
    let ok = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={soft}:{hard}"))
        .status()
        .expect("prlimit (util-linux) runs")
        .success();
    assert!(ok, "prlimit --pid {pid} --nofile={soft}:{hard}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_raises_the_soft_limit_to_the_hard_one() {
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["ok.example.test"], "ok").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config_with_route(dir.path(), e.addr, "[limits]\nmax_connections = 1000\n");
    let p = ProxyProcess::start_under(&["prlimit", "--nofile=1024:4096", "--"], &cfg).await;
    assert_eq!(nofile(p.pid()), (4096, 4096));
    assert_eq!(
        get(p.addr, "ok.example.test", &ca).await.unwrap().0,
        "hello from ok"
    );
}

#[test]
fn check_refuses_a_connection_limit_the_descriptors_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("proxy.toml");
    std::fs::write(
        &cfg,
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[limits]\nmax_connections = 1000\n",
    )
    .unwrap();
    let run = |nofile: &str| {
        Command::new("prlimit")
            .arg(format!("--nofile={nofile}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_mse-proxy"))
            .args(["check", "--config"])
            .arg(&cfg)
            .output()
            .expect("prlimit (util-linux) runs")
    };
    // 1,000 connections need 2,256 descriptors: a hard limit of 2,048 is
    // refused, whatever the soft one.
    let out = run("1024:2048");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("limits.max_connections"), "{err}");
    assert!(err.contains("2256") && err.contains("2048"), "{err}");
    // A soft limit below but a hard one above is fine: start raises it.
    let out = run("1024:4096");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_on_connect_is_the_proxys_outcome_and_the_backend_stays_healthy() {
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["ok.example.test"], "ok").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config_with_route(dir.path(), e.addr, "[limits]\nmax_connections = 100\n");
    let p = ProxyProcess::start(&cfg).await;
    let pid = p.pid();
    assert_eq!(
        get(p.addr, "ok.example.test", &ca).await.unwrap().0,
        "hello from ok"
    );
    let (soft, hard) = nofile(pid);
    // Room for the accepted client socket (the lowest free number) and
    // nothing more: the upstream socket cannot be opened. Should another
    // descriptor of the process be open at that instant (the first
    // connection's sockets closing late on a loaded machine), the accept
    // itself has no room and the client waits: then the limit is put back
    // and it is tried again, a bounded number of times.
    let mut starved = None;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        prlimit(pid, lowest_free_fd(pid) + 1, hard);
        let tried =
            tokio::time::timeout(Duration::from_secs(3), get(p.addr, "ok.example.test", &ca)).await;
        prlimit(pid, soft, hard);
        if let Ok(result) = tried {
            starved = Some(result);
            break;
        }
    }
    let starved = starved.expect("the starved connection was never accepted");
    assert!(
        starved.is_err(),
        "routed without a descriptor for the upstream"
    );

    let metrics = reqwest::get(p.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exhausted = "mse_proxy_connections_total{mode=\"passthrough\",outcome=\"local_resource_exhausted\",route=\"ok\"}";
    assert_eq!(sample(&metrics, exhausted), Some(1.0), "{metrics}");
    // Not the backend's failure: nothing counted against it, and the next
    // connection goes straight to it.
    let failures = "mse_proxy_upstream_connect_failures_total{route=\"ok\"}";
    assert_eq!(sample(&metrics, failures), Some(0.0), "{metrics}");
    assert_eq!(
        get(p.addr, "ok.example.test", &ca).await.unwrap().0,
        "hello from ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_transfer_with_no_descriptor_left_for_a_pipe_is_copied_and_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["ok.example.test"], "ok").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config_with_route(dir.path(), e.addr, "[relay]\nsplice = true\n");
    let p = ProxyProcess::start(&cfg).await;
    let pid = p.pid();
    let mut conn = EchoConn::open(p.addr, "ok.example.test", &ca).await;
    let (soft, hard) = nofile(pid);
    // Not one descriptor left: the relay's first bulk chunk finds no pipe
    // (none was made yet: the greeting and the ping were small reads).
    tokio::time::sleep(Duration::from_millis(300)).await;
    prlimit(pid, lowest_free_fd(pid), hard);
    let sent: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    let (mut rd, mut wr) = tokio::io::split(&mut conn.0);
    let write = async {
        wr.write_all(&sent).await?;
        wr.flush().await
    };
    let mut back = vec![0u8; sent.len()];
    let read = rd.read_exact(&mut back);
    let both = tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(write, read) });
    let (w, r) = both.await.expect("the echo went through in time");
    prlimit(pid, soft, hard);
    w.expect("all written through the proxy");
    r.expect("all echoed back through the proxy");
    assert!(back == sent, "the echo differs from what was sent");
    assert!(conn.ping("still relaying").await);
    let copied = p.metric("mse_proxy_splice_pipe_failures_total").await;
    assert!(
        copied >= 1.0,
        "no chunk counted as copied for want of a pipe"
    );
}
