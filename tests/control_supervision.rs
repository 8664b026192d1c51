//! The reconciler is supervised: once it ends or stops answering, `/healthz`
//! fails and the serve loop returns an error (the binary exits non-zero),
//! so that the process supervisor restarts the proxy.

mod common;

use std::time::Duration;

use common::*;

async fn healthz(admin: std::net::SocketAddr) -> (u16, String) {
    let r = reqwest::get(format!("http://{admin}/healthz"))
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// `/healthz` status within `bound`, polled.
async fn healthz_becomes(admin: std::net::SocketAddr, want: u16, bound: Duration) -> String {
    let end = tokio::time::Instant::now() + bound;
    loop {
        let (status, body) = healthz(admin).await;
        if status == want {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "/healthz still {status} ({body}) after {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const ADMIN: &str = "[admin]\naddress = \"127.0.0.1:0\"\n[timeouts]\nshutdown_grace = \"0s\"\n";

#[tokio::test]
async fn a_killed_reconciler_fails_healthz_and_ends_the_serve_loop_with_an_error() {
    let server = proxy(
        config(ADMIN),
        &[spec("a", &["a.example.test"], &["127.0.0.1:1".into()])],
    );
    let admin = server.admin_addr.unwrap();
    assert_eq!(healthz(admin).await, (200, "ok\n".into()));

    server.kill_reconciler_for_tests();
    let body = healthz_becomes(admin, 503, Duration::from_secs(5)).await;
    assert_eq!(body, "unhealthy: the reconciler task was cancelled\n");
    // A change cannot be made any more, and says so.
    assert!(server.control.ping().await.is_err());

    let served = tokio::time::timeout(
        Duration::from_secs(10),
        mse_proxy::server::serve_until_signal(server),
    )
    .await
    .expect("the serve loop ends on its own");
    let e = served.expect_err("a failed control plane is an error");
    assert_eq!(
        e.to_string(),
        "control plane failed: the reconciler task was cancelled"
    );
}

#[tokio::test]
async fn a_reconciler_that_stops_answering_fails_healthz_after_the_stall_timeout() {
    let server = proxy(
        config(&format!("[reload]\nstall_timeout = \"1s\"\n{ADMIN}")),
        &[],
    );
    let admin = server.admin_addr.unwrap();
    assert!(server.control.ping().await.is_ok());
    assert_eq!(healthz(admin).await.0, 200);

    // As a read stuck inside it would: alive, but deaf.
    server
        .control
        .stall_for_tests(Duration::from_secs(600))
        .await;
    let body = healthz_becomes(admin, 503, Duration::from_secs(10)).await;
    assert_eq!(
        body,
        "unhealthy: the reconciler has answered no ping for 1s\n"
    );
}

#[tokio::test]
async fn a_busy_but_answering_reconciler_stays_healthy() {
    let server = proxy(
        config(&format!("[reload]\nstall_timeout = \"2s\"\n{ADMIN}")),
        &[],
    );
    let admin = server.admin_addr.unwrap();
    // Shorter stalls than the timeout, back to back, for longer than it.
    for _ in 0..5 {
        server
            .control
            .stall_for_tests(Duration::from_millis(500))
            .await;
        assert!(server.control.ping().await.is_ok());
    }
    assert_eq!(healthz(admin).await, (200, "ok\n".into()));
}
