//! The admin plane: roles, token rotation without a restart, refusal from
//! the head before the body, token files refused at `check`.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A GET with `token` (or none); the status.
async fn get_with(live: &Live, path: &str, token: Option<&str>) -> u16 {
    let mut r = reqwest::Client::new().get(live.admin(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap().status().as_u16()
}

async fn put_with(live: &Live, name: &str, token: &str) -> u16 {
    let s = spec(
        name,
        &[&format!("{name}.example.test")],
        &["127.0.0.1:1".into()],
    );
    reqwest::Client::new()
        .put(live.admin(&format!("/routes/{name}")))
        .header("authorization", format!("Bearer {token}"))
        .json(&s)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn reads_need_a_read_token_and_writes_a_write_token() {
    let live = Live::start(&[], "");
    for path in ["/routes", "/apps", "/routes/x", "/apps/p/n"] {
        assert_eq!(get_with(&live, path, None).await, 401, "{path}");
        assert_eq!(
            get_with(&live, path, Some("unknown-token-0123456789")).await,
            401,
            "{path}"
        );
    }
    assert_eq!(get_with(&live, "/routes", Some(READ_TOKEN)).await, 200);
    assert_eq!(get_with(&live, "/apps", Some(READ_TOKEN)).await, 200);
    // A write token reads too.
    assert_eq!(get_with(&live, "/routes", Some(TOKEN)).await, 200);
    // Probes and metrics stay open (no metrics_token_file).
    for path in ["/healthz", "/readyz", "/readyz/writes", "/metrics"] {
        assert_eq!(get_with(&live, path, None).await, 200, "{path}");
    }

    // Writes: the read token is forbidden, the write token writes.
    let r = reqwest::Client::new()
        .put(live.admin("/routes/a"))
        .bearer_auth(READ_TOKEN)
        .json(&spec("a", &["a.example.test"], &["127.0.0.1:1".into()]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("`reader` may read only"),
        "{body}"
    );
    assert_eq!(put_with(&live, "a", READ_TOKEN).await, 403);
    assert_eq!(get_with(&live, "/routes/a", Some(READ_TOKEN)).await, 404);
    // The scheme is case-insensitive (RFC 9110).
    assert_eq!(
        reqwest::Client::new()
            .post(live.admin("/reload"))
            .header("authorization", format!("bearer {READ_TOKEN}"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(put_with(&live, "a", TOKEN).await, 200);
    assert_eq!(get_with(&live, "/routes/a", Some(READ_TOKEN)).await, 200);
    let r = reqwest::Client::new()
        .get(live.admin("/routes"))
        .header("authorization", format!("BEARER {READ_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let text = live.scrape().await;
    let n = |series: &str| sample(&text, series).unwrap_or(-1.0);
    assert!(n(r#"mse_proxy_admin_requests_total{access="write",outcome="forbidden"}"#) >= 3.0);
    assert!(n(r#"mse_proxy_admin_requests_total{access="read",outcome="unauthenticated"}"#) >= 8.0);
    assert!(n(r#"mse_proxy_admin_requests_total{access="write",outcome="ok"}"#) >= 1.0);
}

#[tokio::test]
async fn metrics_behind_their_own_token_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("metrics-token");
    write_secret(&m, "prometheus:scrape-token-0123456789\n");
    let live = Live::start(&[], &format!("metrics_token_file = {m:?}\n"));
    assert_eq!(get_with(&live, "/metrics", None).await, 401);
    assert_eq!(
        get_with(&live, "/metrics", Some("scrape-token-0123456789")).await,
        200
    );
    assert_eq!(get_with(&live, "/metrics", Some(READ_TOKEN)).await, 200);
    // A metrics token reads nothing else.
    assert_eq!(
        get_with(&live, "/routes", Some("scrape-token-0123456789")).await,
        403
    );
    assert_eq!(get_with(&live, "/healthz", None).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_rotates_without_a_restart() {
    let live = Live::start(&[], "");
    let file = live.dir.path().join("token");
    let new = "rotated-token-9876543210";
    let reloads = |result: &'static str| {
        let live = &live;
        async move {
            sample(
                &live.scrape().await,
                &format!("mse_proxy_admin_token_reloads_total{{result=\"{result}\"}}"),
            )
            .unwrap_or(-1.0)
        }
    };
    // Other files changing beside the tokens (a log) re-read nothing, and
    // a re-read that finds the same tokens is not a reload.
    for i in 0..5 {
        std::fs::write(live.dir.path().join("proxy.log"), format!("line {i}\n")).unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    write_secret(&file, &format!("{TOKEN}\n"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(reloads("ok").await, 0.0);
    assert_eq!(reloads("error").await, 0.0);
    assert_eq!(put_with(&live, "one", TOKEN).await, 200);
    assert_eq!(put_with(&live, "one", new).await, 401);

    // Overlap: both in the file, both valid.
    write_secret(&file, &format!("old:{TOKEN}\nnew:{new}\n"));
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            put_with(&live, "two", new).await == 200
        })
        .await,
        "the new token was not taken from the file"
    );
    assert_eq!(put_with(&live, "three", TOKEN).await, 200);

    // The old one removed: refused, with no signal and no restart.
    write_secret(&file, &format!("new:{new}\n"));
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            put_with(&live, "four", TOKEN).await == 401
        })
        .await,
        "the removed token is still accepted"
    );
    assert_eq!(put_with(&live, "five", new).await, 200);

    // A broken file (empty, or readable by others) changes nothing: the
    // tokens in service stay, and the refusal is counted.
    assert_eq!(
        reloads("ok").await,
        2.0,
        "one reload per change of the file"
    );
    let errors = || reloads("error");
    write_secret(&file, "");
    assert!(eventually_async(Duration::from_secs(5), || async { errors().await >= 1.0 }).await);
    assert_eq!(put_with(&live, "six", new).await, 200);
    use std::os::unix::fs::PermissionsExt;
    let tmp = file.with_extension("shared");
    std::fs::write(&tmp, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    assert!(eventually_async(Duration::from_secs(5), || async { errors().await >= 2.0 }).await);
    assert_eq!(put_with(&live, "seven", new).await, 200);
    assert_eq!(put_with(&live, "seven", TOKEN).await, 401);
}

/// A PUT that declares a 100 MB body, sends 2 KB of it and no token, is
/// answered 401 at once: the body is never waited for.
#[tokio::test]
async fn a_huge_body_without_a_token_is_refused_from_the_head() {
    let live = Live::start(&[], "");
    let mut s = TcpStream::connect(live.server.admin_addr.unwrap())
        .await
        .unwrap();
    let head = "PUT /routes/big HTTP/1.1\r\nhost: admin\r\ncontent-type: application/json\r\n\
                content-length: 100000000\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&[b' '; 2048]).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf))
        .await
        .expect("no answer within 1 s: the body was waited for")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // And the connection is closed, not left to read 100 MB.
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(2)).await;
    assert!(
        closed,
        "the connection stayed open for the rest of the body"
    );
}

#[tokio::test]
async fn bodies_are_capped_per_endpoint() {
    let live = Live::start(&[], "max_route_body = 1024\n");
    let mut s = spec("big", &["big.example.test"], &["127.0.0.1:1".into()]);
    s.backends = (0..200)
        .map(|i| format!("10.0.0.{}:443", i % 250))
        .collect();
    let r = live.put_route("big", &s).await;
    assert_eq!(r.status(), 413);
    let ok = spec("ok", &["ok.example.test"], &["127.0.0.1:1".into()]);
    assert_eq!(live.put_route("ok", &ok).await.status(), 200);
}

/// `mse-proxy check` on a config whose token file is `text` with `mode`.
async fn check_with_token(text: &str, mode: u32) -> (bool, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin-token");
    std::fs::write(&token, text).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n\
         token_file = \"admin-token\"\n",
    )
    .unwrap();
    check_binary(&config).await
}

#[tokio::test]
async fn check_refuses_empty_and_shared_token_files_naming_them() {
    let (ok, out) = check_with_token("ops:good-token-0123456789\n", 0o600).await;
    assert!(ok, "{out}");
    let (ok, out) = check_with_token("", 0o600).await;
    assert!(!ok);
    assert!(
        out.contains("admin.token_file: `") && out.contains("admin-token`: holds no token"),
        "{out}"
    );
    let (ok, out) = check_with_token("good-token-0123456789\n", 0o644).await;
    assert!(!ok);
    assert!(
        out.contains("admin-token`: accessible to its group or others (mode 0644)"),
        "{out}"
    );
    let (ok, out) = check_with_token("good-token-0123456789\n", 0o640).await;
    assert!(!ok, "{out}");
}

/// Opens a connection and sends the start of a request head, never its end.
async fn slow_header(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /routes HTTP/1.1\r\nhost: admin\r\nx-slow: ")
        .await
        .unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_closed_by_the_timeout_while_others_are_served() {
    let live = Live::start(
        &[],
        "header_read_timeout = \"1500ms\"\nmax_connections = 200\n",
    );
    let addr = live.server.admin_addr.unwrap();
    let mut slow = Vec::new();
    for _ in 0..100 {
        slow.push(slow_header(addr).await);
    }
    let opened = std::time::Instant::now();
    // A normal request meanwhile: served at once.
    let t = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(1), live.get("/routes"))
        .await
        .expect("a normal request waited behind the slow ones");
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() < Duration::from_secs(1));
    // Every slow one is closed by the header timeout, not before it.
    for (i, s) in slow.iter_mut().enumerate() {
        let (_, closed) = read_to_close(s, Duration::from_secs(5)).await;
        assert!(closed, "slow connection {i} is still open after 5 s");
    }
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_millis(1000),
        "closed after {took:?}: too early"
    );
    assert!(took < Duration::from_secs(4), "closed after {took:?}");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_slot() {
    let live = Live::start(&[], "header_read_timeout = \"1s\"\nmax_connections = 2\n");
    let addr = live.server.admin_addr.unwrap();
    let _a = slow_header(addr).await;
    let _b = slow_header(addr).await;
    // Both slots held: a third is not served until the timeout frees one.
    let t = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), live.get("/routes"))
        .await
        .expect("never served");
    assert_eq!(r.status(), 200);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(700),
        "served after {waited:?}: the cap did not hold"
    );
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let live = Live::start(
        &[],
        "header_read_timeout = \"10s\"\nidle_timeout = \"500ms\"\n",
    );
    let mut s = TcpStream::connect(live.server.admin_addr.unwrap())
        .await
        .unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: admin\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t = std::time::Instant::now();
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "the idle connection stayed open");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
}

#[tokio::test]
async fn a_slow_body_gets_408_after_the_request_timeout() {
    let live = Live::start(&[], "request_timeout = \"500ms\"\n");
    let mut s = TcpStream::connect(live.server.admin_addr.unwrap())
        .await
        .unwrap();
    let head = format!(
        "PUT /routes/slow HTTP/1.1\r\nhost: admin\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("no answer: the slow body held the request")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}
