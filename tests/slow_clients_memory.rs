//! 10,000 connections that never finish their hello keep the proxy's memory
//! bounded, and it keeps serving. The proxy runs as its own process (the real
//! binary), so its RSS and file descriptors are its own.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real binary serving one route to `backend`, on an ephemeral port.
struct ProxyProcess {
    child: Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl ProxyProcess {
    /// `extra` is appended to the config (after the listener, so tables
    /// only). With `keep_log`, the log keeps being read (and shown if the test
    /// fails) so the proxy never blocks on a full pipe; without it, the pipe
    /// is closed right after the listening line.
    async fn spawn(backend: std::net::SocketAddr, extra: &str, keep_log: bool) -> ProxyProcess {
        let dir = tempfile::tempdir().unwrap();
        write_routes(
            &dir.path().join("routes.toml"),
            &[spec("ok", &["ok.example.test"], &[backend.to_string()])],
        );
        let cfg = dir.path().join("proxy.toml");
        std::fs::write(
            &cfg,
            format!(
                "routes_file = \"routes.toml\"\nworkers = 1\n[[listener]]\naddress = \"127.0.0.1:0\"\n{extra}"
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_mse-proxy"))
            .arg("--config")
            .arg(&cfg)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        // The listening address, from the JSON log line that announces it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if v["fields"]["message"] == "listening" {
                    if let (Some(tx), Some(a)) = (tx.take(), v["fields"]["address"].as_str()) {
                        let _ = tx.send(a.parse::<std::net::SocketAddr>().unwrap());
                    }
                    if !keep_log {
                        return;
                    }
                }
                eprintln!("proxy: {line}");
            }
        });
        let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
            .await
            .unwrap()
            .expect("the proxy did not start listening");
        ProxyProcess {
            child: Child(child),
            addr,
            _dir: dir,
        }
    }
}

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
