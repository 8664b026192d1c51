//! Upgrades that break nothing (`mse_proxy::upgrade`), through the real
//! binary: SIGUSR2 or `mse-proxy upgrade` starts a new process that takes
//! the listeners and the passthrough connections. Timings are printed,
//! never asserted.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest::{Context, SHA256};
use common::process::{upgrade_cmd, write_config_with_route, ProxyProcess};
use mse_proxy::standin::Ca;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SNI: &str = "ok.example.test";

/// 10 upgrades while 20 clients keep opening TLS connections through a
/// passthrough route to a rustls backend: not one is refused or reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_upgrades_under_load_refuse_nothing() {
    let ca = Arc::new(Ca::new("upgrade ca").unwrap());
    let (enclave, _leaf) = common::enclave(&ca, &[SNI], "backend").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config_with_route(dir.path(), enclave.addr, "");
    let mut proxy = ProxyProcess::start(&cfg).await;
    let addr = proxy.addr;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for _ in 0..20 {
        let (stop, ok, failed, ca) = (stop.clone(), ok.clone(), failed.clone(), ca.clone());
        clients.push(tokio::spawn(async move {
            // Bounded: at most this many connections per client.
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match common::get(addr, SNI, &ca).await {
                    Ok((body, _)) if body == "hello from backend" => {
                        ok.fetch_add(1, Ordering::Relaxed)
                    }
                    Ok((body, _)) => {
                        eprintln!("unexpected body {body:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        eprintln!("client error: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let mut took = Vec::new();
    for i in 0..10 {
        let before = ok.load(Ordering::Relaxed);
        let (pid, t) = proxy.upgrade().await.expect("the upgrade succeeds");
        took.push(t);
        println!("upgrade {i}: pid {pid} serving after {t:?} (connections so far {before})");
    }
    // Traffic after the last upgrade too.
    let at = ok.load(Ordering::Relaxed);
    common::eventually(Duration::from_secs(30), || {
        ok.load(Ordering::Relaxed) > at + 50
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    took.sort();
    println!(
        "10 upgrades under 20 clients: {ok} connections ok, {failed} failed; upgrade latency (SIGUSR2 -> new process serving) min {:?} median {:?} max {:?}",
        took[0], took[5], took[9]
    );
    assert_eq!(failed, 0, "no connection refused or reset");
    assert!(ok > 0);
    // Every old process exited once it owned nothing.
    let pid = proxy.serving_pid();
    assert!(ProxyProcess::alive(pid));
}

/// One passthrough connection streams both ways through 3 upgrades:
/// byte-exact each way (SHA-256), never interrupted; its route expiring
/// afterwards still closes it (in the process that owns it by then).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_survives_three_upgrades_and_still_expires() {
    let ca = Ca::new("upgrade ca").unwrap();
    let (enclave, _leaf) = common::enclave(&ca, &[SNI], "backend").await;
    let dir = tempfile::tempdir().unwrap();
    let expiry = chrono::Utc::now() + chrono::Duration::seconds(25);
    let mut spec = common::spec("ok", &[SNI], &[enclave.addr.to_string()]);
    spec.expires_at = Some(expiry.to_rfc3339());
    common::write_routes(&dir.path().join("routes.toml"), &[spec]);
    let cfg = common::process::write_config(dir.path(), "routes_file = \"routes.toml\"\n");
    let mut proxy = ProxyProcess::start(&cfg).await;

    let tls = common::tls_connect(proxy.addr, SNI, &ca).await.unwrap();
    let (mut rd, mut wr) = tokio::io::split(tls);
    let sending = Arc::new(AtomicBool::new(true));
    let sent_bytes = Arc::new(AtomicU64::new(0));
    // The client streams pseudo-random bytes; the enclave echoes them.
    let writer = {
        let (sending, sent_bytes) = (sending.clone(), sent_bytes.clone());
        tokio::spawn(async move {
            let mut hash = Context::new(&SHA256);
            let mut x = 0x9e3779b97f4a7c15u64;
            for _ in 0..1_000_000 {
                if !sending.load(Ordering::Relaxed) {
                    break;
                }
                let mut chunk = vec![0u8; 16 * 1024];
                for b in chunk.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
                if wr.write_all(&chunk).await.is_err() {
                    panic!("the stream was interrupted while sending");
                }
                hash.update(&chunk);
                sent_bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            wr.flush().await.unwrap();
            (hash.finish(), wr)
        })
    };
    let received = Arc::new(AtomicU64::new(0));
    let reader = {
        let received = received.clone();
        tokio::spawn(async move {
            let mut hash = Context::new(&SHA256);
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            // Until the proxy closes it (the expiry): bounded by the test's
            // timeout below.
            while let Ok(n) = rd.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
                total += n as u64;
                received.store(total, Ordering::Relaxed);
            }
            (hash, total, rd)
        })
    };
    for i in 0..3 {
        let before = received.load(Ordering::Relaxed);
        let (pid, t) = proxy.upgrade().await.expect("the upgrade succeeds");
        common::eventually(Duration::from_secs(30), || {
            received.load(Ordering::Relaxed) > before + 256 * 1024
        })
        .await;
        println!(
            "stream upgrade {i}: pid {pid} serving after {t:?}; {} bytes echoed so far",
            received.load(Ordering::Relaxed)
        );
    }
    // Stop sending, let the echo catch up, compare.
    sending.store(false, Ordering::Relaxed);
    let (sent_hash, wr) = writer.await.unwrap();
    let total = sent_bytes.load(Ordering::Relaxed);
    assert!(
        common::eventually(Duration::from_secs(30), || received.load(Ordering::Relaxed)
            >= total)
        .await,
        "every byte sent came back: {} of {total}",
        received.load(Ordering::Relaxed)
    );
    assert_eq!(
        received.load(Ordering::Relaxed),
        total,
        "not one byte more either"
    );
    // The route expires with the connection open: the owning process closes it.
    let (hash, _total, rd) = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the expiry closes the connection")
        .unwrap();
    let closed_at = chrono::Utc::now();
    assert_eq!(
        hash.finish().as_ref(),
        sent_hash.as_ref(),
        "byte-exact both ways"
    );
    println!(
        "stream through 3 upgrades: {total} bytes each way, SHA-256 equal; closed {} ms after the route's expiry",
        (closed_at - expiry).num_milliseconds()
    );
    assert!(
        closed_at >= expiry - chrono::Duration::seconds(1),
        "closed by the expiry, not before"
    );
    drop((wr, rd));
}

/// A new binary that claims another hand-off format is refused: the CLI
/// says so, and the old process serves on with its listeners and state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_of_another_format_is_refused_and_the_old_serves_on() {
    let ca = Ca::new("upgrade ca").unwrap();
    let (enclave, _leaf) = common::enclave(&ca, &[SNI], "backend").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config_with_route(dir.path(), enclave.addr, "");
    let mut proxy = ProxyProcess::start(&cfg).await;
    let wrapper = dir.path().join("other-format");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nMSE_PROXY_UPGRADE_FORMAT=99 exec {} \"$@\"\n",
            env!("CARGO_BIN_EXE_mse-proxy")
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let open = common::EchoConn::open(proxy.addr, SNI, &ca).await;
    let (code, out) = tokio::task::spawn_blocking({
        let (cfg, wrapper) = (cfg.clone(), wrapper.clone());
        move || upgrade_cmd(&cfg, Some(&wrapper))
    })
    .await
    .unwrap();
    println!("mse-proxy upgrade with a format-99 binary: exit {code:?}: {out}");
    assert_eq!(code, Some(1));
    assert!(out.contains("format 99"), "{out}");
    assert!(
        proxy.next_upgrade().await.is_none(),
        "the old process reports the failure"
    );
    let mut open = open;
    assert!(
        open.ping("still here").await,
        "an open connection is untouched"
    );
    let (body, _) = common::get(proxy.addr, SNI, &ca).await.unwrap();
    assert_eq!(body, "hello from backend");
    let (status, _) = proxy.get("/readyz").await;
    assert_eq!(status, 200);
    let text = reqwest::get(proxy.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        common::sample(&text, "mse_proxy_upgrades_total{result=\"refused\"}"),
        Some(1.0)
    );
    // And a real upgrade still works afterwards (the state store resumed).
    let (code, out) = tokio::task::spawn_blocking(move || upgrade_cmd(&cfg, None))
        .await
        .unwrap();
    println!("mse-proxy upgrade: exit {code:?}: {out}");
    assert_eq!(code, Some(0), "{out}");
    proxy.next_upgrade().await.expect("the upgrade succeeds");
    assert!(open.ping("moved").await, "the connection moved with it");
}

/// Whether process `pid` still runs (a zombie, exited but not yet reaped
/// by the test, counts as ended).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}

/// A terminate connection holds its TLS state in the old process: it is
/// not moved, it goes on working there through the upgrade, and the old
/// process exits once it has ended (it owns nothing then).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_terminate_connection_finishes_in_the_old_process() {
    const HOST: &str = "echo.apps.example.test";
    let platform_ca = Ca::new("platform CA").unwrap();
    let cert = common::PlatformCert::new(&platform_ca.issue(&[HOST]).unwrap());
    let enclave_ca = Ca::new("enclave CA").unwrap();
    let (e, leaf) = common::enclave(&enclave_ca, &["enclave.internal"], "echo").await;
    let dir = tempfile::tempdir().unwrap();
    common::write_routes(
        &dir.path().join("routes.toml"),
        &[common::terminate_spec(
            "echo",
            &[HOST],
            &[e.addr],
            common::pinned(&leaf),
        )],
    );
    let cfg = common::process::write_config(
        dir.path(),
        &format!(
            "routes_file = \"routes.toml\"\n[timeouts]\nshutdown_grace = \"60s\"\n{}",
            cert.toml()
        ),
    );
    let mut proxy = ProxyProcess::start(&cfg).await;
    let old = proxy.pid();
    let mut open = common::EchoConn::open(proxy.addr, HOST, &platform_ca).await;

    let (new, t) = proxy.upgrade().await.expect("the upgrade succeeds");
    println!("terminate upgrade: pid {new} serving after {t:?}");
    assert_ne!(new, old);
    // New connections reach the new process; the open one still works,
    // relayed by the old one, which stays for it.
    let mut fresh = common::EchoConn::open(proxy.addr, HOST, &platform_ca).await;
    assert!(fresh.ping("to the new process").await);
    for i in 0..5 {
        assert!(open.ping(&format!("after the upgrade {i}")).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        running(old),
        "the old process left with a connection to drain"
    );

    // Once it ends, the old process owns nothing and exits.
    drop(open);
    assert!(
        common::eventually(Duration::from_secs(30), || !running(old)).await,
        "the old process did not exit after its last connection ended"
    );
    assert!(fresh.ping("still served").await);
}
