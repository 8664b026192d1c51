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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_slow_clients_keep_memory_bounded() {
    const SLOW: usize = 10_000;
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["ok.example.test"], "ok").await;
    let dir = tempfile::tempdir().unwrap();
    write_routes(
        &dir.path().join("routes.toml"),
        &[spec("ok", &["ok.example.test"], &[e.addr.to_string()])],
    );
    let cfg = dir.path().join("proxy.toml");
    std::fs::write(
        &cfg,
        "routes_file = \"routes.toml\"\nworkers = 1\n[[listener]]\naddress = \"127.0.0.1:0\"\n\
         [timeouts]\nclient_hello = \"60s\"\n[log]\nformat = \"json\"\naccess_log = false\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mse-proxy"))
        .arg("--config")
        .arg(&cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take();
    let child = Child(child);
    let pid = child.0.id();
    // The listening address, from the JSON log line that announces it.
    // The listening address, from the JSON log line that announces it; the
    // rest of the log keeps being read (and shown if the test fails), so the
    // proxy never blocks on a full stderr pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr.unwrap()).lines() {
            let Ok(line) = line else { break };
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["fields"]["message"] == "listening" {
                if let (Some(tx), Some(a)) = (tx.take(), v["fields"]["address"].as_str()) {
                    let _ = tx.send(a.parse::<std::net::SocketAddr>().unwrap());
                }
            }
            eprintln!("proxy: {line}");
        }
    });
    let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the proxy did not start listening");
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
    let dir = tempfile::tempdir().unwrap();
    write_routes(
        &dir.path().join("routes.toml"),
        &[spec("ok", &["ok.example.test"], &[e.addr.to_string()])],
    );
    let cfg = dir.path().join("proxy.toml");
    std::fs::write(
        &cfg,
        "routes_file = \"routes.toml\"\n[[listener]]\naddress = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mse-proxy"))
        .arg("--config")
        .arg(&cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _child = Child(child);
    // Read up to the listening line, then close the pipe.
    let addr = tokio::task::spawn_blocking(move || {
        for line in BufReader::new(stderr).lines() {
            let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap_or_default();
            if v["fields"]["message"] == "listening" {
                return v["fields"]["address"]
                    .as_str()
                    .unwrap()
                    .parse::<std::net::SocketAddr>()
                    .unwrap();
            }
        }
        panic!("the proxy exited without listening");
    })
    .await
    .unwrap();
    for _ in 0..3 {
        assert_eq!(
            get(addr, "ok.example.test", &ca).await.unwrap().0,
            "hello from ok"
        );
    }
}
