//! Live routing: reloads, expiry that closes connections, and the admin API.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use mse_proxy::config::routes::RouteSpec;
use serde_json::Value;

fn rfc3339_in(d: Duration) -> String {
    (chrono::Utc::now() + chrono::Duration::from_std(d).unwrap())
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_expiring_in_one_second_closes_its_connection_and_refuses_new_ones() {
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["exp.example.test"], "exp").await;
    let mut s = spec("exp", &["exp.example.test"], &[e.addr.to_string()]);
    let start = tokio::time::Instant::now();
    s.expires_at = Some(rfc3339_in(Duration::from_secs(1)));
    let live = Live::start(&[s], "");
    let mut conn = EchoConn::open(live.addr(), "exp.example.test", &ca).await;
    assert!(conn.ping("before expiry").await);
    // Open until the expiry, closed by 1.2 s after the route was made.
    let bound = Duration::from_millis(1200).saturating_sub(start.elapsed());
    assert!(
        conn.closed_within(bound).await,
        "connection still open 1.2 s after a 1 s expiry"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(990),
        "closed before the expiry"
    );
    let err = get(live.addr(), "exp.example.test", &ca).await.unwrap_err();
    assert!(err.to_string().contains("UnrecognisedName"), "{err}");
    let routes: Value = live.get("/routes").await.json().await.unwrap();
    assert_eq!(routes["routes"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_rewritten_100_times_while_50_clients_connect_loses_nothing() {
    let ca = Arc::new(Ca::new("test CA").unwrap());
    let (stable, _) = enclave(&ca, &["stable.example.test"], "stable").await;
    let stable_spec = spec(
        "stable",
        &["stable.example.test"],
        &[stable.addr.to_string()],
    );
    // 50 clients on one address and one route, as fast as they can: the
    // client and route rates (tests/fairness.rs) would refuse most.
    let live = Live::start(
        std::slice::from_ref(&stable_spec),
        "[limits]\nclient_new_connections_per_second = 0\nroute_new_connections_per_second = 0\n",
    );
    let pa = live.addr();
    let applied_before = live.applied();
    let done = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..50 {
        let (ca, done, ok, failed) = (ca.clone(), done.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            // Bounded: stops when the writer is done, at most 2,000 rounds.
            for _ in 0..2000 {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                match get(pa, "stable.example.test", &ca).await {
                    Ok((body, _)) if body == "hello from stable" => {
                        ok.fetch_add(1, Ordering::Relaxed)
                    }
                    other => {
                        if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("failed connection: {other:?}");
                        }
                        0
                    }
                };
            }
        }));
    }
    for i in 0..100u16 {
        // Another route changes every time; the stable one never does.
        let churn = spec(
            "churn",
            &["churn.example.test"],
            &[format!("127.0.0.1:{}", 20000 + i)],
        );
        let specs = [stable_spec.clone(), churn];
        if i % 2 == 0 {
            write_routes(&live.routes_path, &specs);
        } else {
            write_routes_in_place(&live.routes_path, &specs);
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    done.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    if failed > 0 {
        for o in mse_proxy::proxy::Outcome::ALL {
            for (route, mode) in [("stable", "passthrough"), ("(none)", "(none)")] {
                let n = outcomes(&live.server, route, mode, o.as_str());
                if n > 0 {
                    eprintln!("{route} {o}: {n}");
                }
            }
        }
    }
    assert_eq!(failed, 0, "{failed} of {} connections failed", ok + failed);
    assert!(ok >= 50, "clients made only {ok} connections");
    let reloads = live.applied() - applied_before;
    assert!(
        reloads >= 10,
        "the watcher applied only {reloads} reloads for 100 rewrites"
    );
    // The last rewrite is live.
    let r: Value = live.get("/routes/churn").await.json().await.unwrap();
    assert_eq!(r["backends"][0], "127.0.0.1:20099");
}

#[tokio::test]
async fn broken_routes_file_keeps_the_old_table_and_says_why() {
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["a.example.test"], "a").await;
    let live = Live::start(&[spec("a", &["a.example.test"], &[e.addr.to_string()])], "");
    let mut conn = EchoConn::open(live.addr(), "a.example.test", &ca).await;
    std::fs::write(
        &live.routes_path,
        "[[route]]\nname = \"a\"\nhosts = [\"a.example.test\"]\nbackends = [\"nope\"]\n",
    )
    .unwrap();
    let resp = reqwest::Client::new()
        .post(live.admin("/reload"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    let detail = body["details"][0].as_str().unwrap();
    assert!(
        detail.contains("routes.toml: route[0].backends[0]: `nope`"),
        "{detail}"
    );
    // Syntax errors too, through the watcher this time.
    std::fs::write(&live.routes_path, "[[route]\nname = ").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        conn.ping("still here").await,
        "open connection must survive a refused reload"
    );
    assert_eq!(
        get(live.addr(), "a.example.test", &ca).await.unwrap().0,
        "hello from a"
    );
    assert!(live.server.control.stats.refused.load(Ordering::Relaxed) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_route_connection_survives_20_reloads_and_removed_route_closes() {
    let ca = Ca::new("test CA").unwrap();
    let (a, _) = enclave(&ca, &["a.example.test"], "a").await;
    let (b, _) = enclave(&ca, &["b.example.test"], "b").await;
    let sa = spec("a", &["a.example.test"], &[a.addr.to_string()]);
    let sb = spec("b", &["b.example.test"], &[b.addr.to_string()]);
    let live = Live::start(&[sa.clone(), sb.clone()], "");
    let mut conn_a = EchoConn::open(live.addr(), "a.example.test", &ca).await;
    let mut conn_b = EchoConn::open(live.addr(), "b.example.test", &ca).await;
    for i in 0..20 {
        let mut other = spec(
            "other",
            &["other.example.test"],
            &["127.0.0.1:1".to_string()],
        );
        other.close_grace = Some(format!("{i}ms"));
        write_routes(&live.routes_path, &[sa.clone(), sb.clone(), other]);
        live.server.control.reload_file().await.unwrap();
        assert!(
            conn_a.ping(&format!("reload {i}")).await,
            "connection broke at reload {i}"
        );
    }
    assert!(conn_b.ping("b alive").await);
    // Now drop route b from the file: its connection closes, a's does not.
    write_routes(&live.routes_path, std::slice::from_ref(&sa));
    let applied = live.server.control.reload_file().await.unwrap();
    assert_eq!(applied.removed, 2);
    assert!(
        conn_b.closed_within(Duration::from_secs(5)).await,
        "removed route's connection stayed open"
    );
    assert!(conn_a.ping("a alive").await);
}

/// When the shutdown grace runs out, every relayed connection closes: one
/// on a route in the table, and one on a route already removed from it but
/// still inside its own close grace (its entry is no longer in the table,
/// so only the kill signal can reach it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_closes_every_connection_even_on_a_removed_route() {
    let ca = Ca::new("test CA").unwrap();
    let (a, _) = enclave(&ca, &["a.example.test"], "a").await;
    let (b, _) = enclave(&ca, &["b.example.test"], "b").await;
    let sa = spec("a", &["a.example.test"], &[a.addr.to_string()]);
    let mut sb = spec("b", &["b.example.test"], &[b.addr.to_string()]);
    sb.close_grace = Some("10m".into());
    let live = Live::start(&[sa.clone(), sb], "");
    let mut conn_a = EchoConn::open(live.addr(), "a.example.test", &ca).await;
    let mut conn_b = EchoConn::open(live.addr(), "b.example.test", &ca).await;
    write_routes(&live.routes_path, std::slice::from_ref(&sa));
    let applied = live.server.control.reload_file().await.unwrap();
    assert_eq!(applied.removed, 1);
    assert!(conn_b.ping("inside its close grace").await);
    assert!(conn_a.ping("a alive").await);

    let cut = live.server.shutdown(Duration::from_millis(200)).await;
    assert_eq!(cut, 2, "both connections were open when the grace ran out");
    assert!(conn_a.closed_within(Duration::from_secs(5)).await);
    assert!(conn_b.closed_within(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn api_writes_need_the_token_and_validate() {
    let ca = Ca::new("test CA").unwrap();
    let (a, _) = enclave(&ca, &["a.example.test"], "a").await;
    let (n, _) = enclave(&ca, &["new.example.test"], "new").await;
    let live = Live::start(&[spec("a", &["a.example.test"], &[a.addr.to_string()])], "");
    let http = reqwest::Client::new();
    let new = spec("new", &["new.example.test"], &[n.addr.to_string()]);

    let r = http
        .put(live.admin("/routes/new"))
        .json(&new)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = http
        .put(live.admin("/routes/new"))
        .bearer_auth("wrong-token-0123456789")
        .json(&new)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "an unknown token is unauthenticated");
    assert!(get(live.addr(), "new.example.test", &ca).await.is_err());

    let r = live.put_route("new", &new).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        get(live.addr(), "new.example.test", &ca).await.unwrap().0,
        "hello from new"
    );

    let list: Value = live.get("/routes").await.json().await.unwrap();
    let names: Vec<(&str, &str)> = list["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["source"].as_str().unwrap()))
        .collect();
    assert_eq!(names, vec![("a", "file"), ("new", "api")]);

    // Invalid body: 400 naming the field.
    let mut bad = new.clone();
    bad.backends = vec!["no-port".into()];
    let r = live.put_route("new", &bad).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["details"][0].as_str().unwrap().contains("backends[0]"),
        "{body}"
    );
    // Name mismatch, not JSON, past expiry: 400.
    let r = live.put_route("other", &new).await;
    assert_eq!(r.status(), 400);
    let r = http
        .put(live.admin("/routes/new"))
        .bearer_auth(TOKEN)
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let mut past = new.clone();
    past.expires_at = Some("2001-01-01T00:00:00Z".into());
    let r = live.put_route("new", &past).await;
    assert_eq!(r.status(), 400);
    // Two routes on one host: 409, nothing changes.
    let clash = spec("clash", &["A.example.test"], &[n.addr.to_string()]);
    assert_refused(
        live.put_route("clash", &clash).await,
        409,
        "already claimed by route `a`",
    )
    .await;
    assert_eq!(
        get(live.addr(), "a.example.test", &ca).await.unwrap().0,
        "hello from a"
    );

    // Delete: API route yes, file route no (409), unknown 404.
    let r = http
        .delete(live.admin("/routes/a"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = http
        .delete(live.admin("/routes/ghost"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http.delete(live.admin("/routes/new")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .delete(live.admin("/routes/new"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(get(live.addr(), "new.example.test", &ca).await.is_err());
    let r = live.get("/routes/new").await;
    assert_eq!(r.status(), 404);

    assert_eq!(
        http.get(live.admin("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(live.admin("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn without_a_token_writes_are_refused() {
    let cfg = config("[admin]\naddress = \"127.0.0.1:0\"\n");
    init_logs();
    let server = mse_proxy::server::start(cfg, vec![]).unwrap();
    let url = format!("http://{}/routes/x", server.admin_addr.unwrap());
    let x = spec("x", &["x.example.test"], &["127.0.0.1:1".to_string()]);
    let r = reqwest::Client::new()
        .put(&url)
        .bearer_auth("anything")
        .json(&x)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("no admin token"),
        "{body}"
    );
}

/// An API route overriding a file route of its name is applied as a delta
/// on the live table; deleting it, or its expiry, puts the file route back
/// (and a host another route claims is still refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_route_over_a_file_route_gives_it_back_on_delete_and_on_expiry() {
    let ca = Ca::new("test CA").unwrap();
    let (f, _) = enclave(&ca, &["a.example.test"], "file").await;
    let (api, _) = enclave(&ca, &["a.example.test"], "api").await;
    let file = spec("a", &["a.example.test"], &[f.addr.to_string()]);
    let other = spec("b", &["b.example.test"], &[f.addr.to_string()]);
    let live = Live::start(&[file, other], "");
    let http = reqwest::Client::new();
    let source = |list: &Value| {
        list["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "a")
            .map(|r| r["source"].as_str().unwrap().to_string())
    };
    let listed = || async {
        let list: Value = http
            .get(live.admin("/routes"))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        source(&list)
    };

    let over = spec("a", &["a.example.test"], &[api.addr.to_string()]);
    assert_eq!(live.put_route("a", &over).await.status(), 200);
    assert_eq!(
        get(live.addr(), "a.example.test", &ca).await.unwrap().0,
        "hello from api"
    );
    assert_eq!(listed().await.as_deref(), Some("api"));
    // Taking b's host is refused, naming b; nothing changes.
    let grab = spec(
        "a",
        &["a.example.test", "b.example.test"],
        &[api.addr.to_string()],
    );
    assert_refused(
        live.put_route("a", &grab).await,
        409,
        "already claimed by route `b`",
    )
    .await;
    assert_eq!(
        get(live.addr(), "a.example.test", &ca).await.unwrap().0,
        "hello from api"
    );

    let r = http
        .delete(live.admin("/routes/a"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        get(live.addr(), "a.example.test", &ca).await.unwrap().0,
        "hello from file"
    );
    assert_eq!(listed().await.as_deref(), Some("file"));

    let mut expiring = over.clone();
    expiring.expires_at = Some(rfc3339_in(Duration::from_secs(1)));
    assert_eq!(live.put_route("a", &expiring).await.status(), 200);
    let mut conn = EchoConn::open(live.addr(), "a.example.test", &ca).await;
    assert!(conn.ping("before expiry").await);
    assert!(
        conn.closed_within(Duration::from_secs(5)).await,
        "the expired API route's connection stayed open"
    );
    assert_eq!(
        get(live.addr(), "a.example.test", &ca).await.unwrap().0,
        "hello from file"
    );
    assert_eq!(listed().await.as_deref(), Some("file"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeploy_moves_new_connections_and_closes_old_ones() {
    let ca = Ca::new("test CA").unwrap();
    let (old, _) = enclave(&ca, &["app.example.test"], "old-node").await;
    let (new, _) = enclave(&ca, &["app.example.test"], "new-node").await;
    let live = Live::start(&[], "");
    let http = reqwest::Client::new();
    let put = |backend: String| {
        let http = http.clone();
        let url = live.admin("/routes/app");
        async move {
            let s = spec("app", &["app.example.test"], &[backend]);
            http.put(url)
                .bearer_auth(TOKEN)
                .json(&s)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(put(old.addr.to_string()).await, 200);
    let mut on_old = EchoConn::open(live.addr(), "app.example.test", &ca).await;
    assert_eq!(put(new.addr.to_string()).await, 200);
    assert_eq!(
        get(live.addr(), "app.example.test", &ca).await.unwrap().0,
        "hello from new-node"
    );
    assert!(
        on_old.closed_within(Duration::from_secs(5)).await,
        "old node's connection kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeploy_with_keep_policy_leaves_old_connections() {
    let ca = Ca::new("test CA").unwrap();
    let (old, _) = enclave(&ca, &["app.example.test"], "old-node").await;
    let (new, _) = enclave(&ca, &["app.example.test"], "new-node").await;
    let sp = |b: String| -> RouteSpec { spec("app", &["app.example.test"], &[b]) };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    write_routes(&path, &[sp(old.addr.to_string())]);
    let cfg = config(&format!(
        "routes_file = {path:?}\n[reload]\non_change = \"keep\"\nwatch = false\n"
    ));
    let routes =
        mse_proxy::config::routes::load_file(&path, &mse_proxy::config::ControlLimits::default())
            .unwrap();
    let server = mse_proxy::server::start(cfg, routes).unwrap();
    let mut on_old = EchoConn::open(server.local_addrs[0], "app.example.test", &ca).await;
    write_routes(&path, &[sp(new.addr.to_string())]);
    server.control.reload_file().await.unwrap();
    assert_eq!(
        get(server.local_addrs[0], "app.example.test", &ca)
            .await
            .unwrap()
            .0,
        "hello from new-node"
    );
    assert!(
        on_old.ping("kept").await,
        "keep policy must leave the old connection open"
    );
    // Removing the route closes the kept connection too.
    write_routes(&path, &[]);
    server.control.reload_file().await.unwrap();
    assert!(on_old.closed_within(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn two_routes_on_one_host_are_rejected_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.toml");
    write_routes(
        &routes,
        &[
            spec("a", &["same.example.test"], &["127.0.0.1:1".into()]),
            spec(
                "b",
                &["*.example.test", "SAME.example.test."],
                &["127.0.0.1:2".into()],
            ),
        ],
    );
    let (code, err) = run_check(
        dir.path(),
        "routes_file = \"routes.toml\"\n[[listener]]\naddress = \"127.0.0.1:0\"\n",
    );
    assert_eq!(code, Some(3));
    assert!(
        err.contains("routes.toml: route[1].hosts: host `same.example.test` of route `b` is already claimed by route `a`"),
        "{err}"
    );
}

#[test]
fn a_log_that_is_not_a_terminal_has_no_colour_escapes() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("proxy.toml");
    std::fs::write(&cfg_path, "[[listener]]\naddress = \"127.0.0.1:0\"\n").unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mse-proxy"))
        .arg("--config")
        .arg(&cfg_path)
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first info line the proxy writes at start, through a pipe.
    let line = rx.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("the proxy logged a line at start");
    assert!(line.contains("INFO"), "{line}");
    assert!(
        !line.contains('\u{1b}'),
        "colour escapes in a piped log: {line:?}"
    );
}
