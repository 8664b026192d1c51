//! Sizing the shared store: how long one instance takes to follow a bulk
//! load of N routes written to etcd, how long one change takes to be live
//! with N routes in the table, how long a fresh instance takes to read N
//! routes and be ready, and what N routes cost in memory.
//!
//! `cargo bench --bench etcd_sizing` (needs `etcd` on PATH: Debian's
//! `etcd-server`). `ETCD_SIZING_ROUTES` sets N (default 10000). It prints
//! figures; it asserts nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use mse_proxy::config::routes::RouteSpec;
use mse_proxy::config::Config;
use mse_proxy::etcd::{put_op, Client, ConnectOptions, RequestOp};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn instance(endpoint: &str) -> mse_proxy::server::Server {
    let text = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[log]\naccess_log = false\nlevel = \"error\"\n\
         [etcd]\nendpoints = [{endpoint:?}]\nprefix = \"/sizing/\"\n"
    );
    let cfg = Config::from_toml(Path::new("sizing.toml"), &text).unwrap();
    mse_proxy::server::start(cfg, Vec::new()).unwrap()
}

async fn live_at(s: &mse_proxy::server::Server, rev: i64, bound: Duration) -> Duration {
    let t = Instant::now();
    while s.shared.metrics.etcd_revision.get() < rev {
        assert!(t.elapsed() < bound, "revision {rev} not live in {bound:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    t.elapsed()
}

fn route(i: usize) -> Vec<u8> {
    let s = RouteSpec::passthrough(
        &format!("r{i}"),
        &[&format!("r{i}.apps.example.com")],
        &[format!(
            "10.{}.{}.{}:443",
            i >> 16 & 255,
            i >> 8 & 255,
            i & 255
        )],
    );
    serde_json::to_vec(&s).unwrap()
}

fn main() {
    let n: usize = std::env::var("ETCD_SIZING_ROUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    let (cport, pport) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{cport}");
    let peer = format!("http://127.0.0.1:{pport}");
    let mut etcd = std::process::Command::new("etcd")
        .args(["--name", "s", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &endpoint,
            "--advertise-client-urls",
            &endpoint,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args([
            "--initial-cluster",
            &format!("s={peer}"),
            "--log-level",
            "error",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("etcd on PATH (Debian package etcd-server)");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let kv = loop {
            if let Ok(c) = Client::connect(ConnectOptions::new([endpoint.as_str()])).await {
                if c.get("probe").await.is_ok() {
                    break c;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let a = instance(&endpoint);
        while a.shared.metrics.etcd_connected.get() != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let rss0 = rss_kib();

        // Bulk: N routes in transactions of 100 puts.
        let t = Instant::now();
        let mut last = 0;
        for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
            let ops: Vec<RequestOp> = chunk
                .iter()
                .map(|&i| put_op(format!("/sizing/routes/r{i}"), route(i), 0))
                .collect();
            let r = kv.txn(Vec::new(), ops).await.unwrap();
            last = r.header.unwrap().revision;
        }
        let written = t.elapsed();
        live_at(&a, last, Duration::from_secs(600)).await;
        let followed = t.elapsed();
        assert_eq!(a.shared.router.load().len(), n);
        let rss1 = rss_kib();

        // One change at a time, with N routes live.
        let mut one = Vec::new();
        for k in 0..20 {
            let t = Instant::now();
            let r = kv
                .put(format!("/sizing/routes/r{k}"), route(k + n), 0)
                .await
                .unwrap();
            live_at(&a, r.header.unwrap().revision, Duration::from_secs(60)).await;
            one.push(t.elapsed());
        }
        one.sort();

        // A fresh instance reading N routes.
        let t = Instant::now();
        let b = instance(&endpoint);
        while !b.control.stats.ready.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let ready = t.elapsed();
        let rss2 = rss_kib();

        println!("etcd sizing, {n} passthrough routes (one run; absolute times are this machine's)");
        println!("  bulk write ({} txns of 100 puts):        {:>8.0} ms", n.div_ceil(100), written.as_secs_f64() * 1e3);
        println!("  bulk followed by one instance:            {:>8.0} ms after the first write", followed.as_secs_f64() * 1e3);
        println!(
            "  one change live with {n} routes: median {:.1} ms, max {:.1} ms (20 changes, from the write request)",
            one[one.len() / 2].as_secs_f64() * 1e3,
            one[one.len() - 1].as_secs_f64() * 1e3
        );
        println!("  fresh instance ready (full read + apply): {:>8.0} ms", ready.as_secs_f64() * 1e3);
        println!(
            "  RSS: +{} KiB for {n} routes in instance A; +{} KiB for instance B",
            rss1.saturating_sub(rss0),
            rss2.saturating_sub(rss1)
        );
        drop((a, b));
    });
    let _ = etcd.kill();
    let _ = etcd.wait();
}
