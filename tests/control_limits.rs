//! The `[limits]` caps on route sets: an oversized write is refused with the
//! field and the key that caps it, fast, and does not hold up the changes
//! sent beside it (the one reconciler task never does unbounded work).

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// What the issue asks: both answers within one second.
const BOUND: Duration = Duration::from_secs(1);

fn many_hosts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("h{i}.big.example.test")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_of_100000_hosts_is_refused_fast_and_a_small_put_beside_it_applies() {
    let ca = Ca::new("test CA").unwrap();
    let (small, _) = enclave(&ca, &["small.example.test"], "small").await;
    // A body cap large enough for the hosts, so the hosts cap is what refuses.
    let live = Live::start(&[], "max_route_body = 16777216\n");
    let hosts = many_hosts(100_000);
    let mut big = spec("big", &["big.example.test"], &["127.0.0.1:1".into()]);
    big.hosts = hosts;
    let big_body = serde_json::to_vec(&big).unwrap();
    let small_spec = spec("small", &["small.example.test"], &[small.addr.to_string()]);

    let http = reqwest::Client::new();
    let big_put = http
        .put(live.admin("/routes/big"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(big_body)
        .send();
    let small_put = live.put_route("small", &small_spec);
    let (big_r, small_r) = tokio::join!(
        tokio::time::timeout(BOUND, big_put),
        tokio::time::timeout(BOUND, small_put)
    );
    let big_r = big_r
        .expect("the 100,000-host PUT is answered within 1 s")
        .unwrap();
    let small_r = small_r.expect("the small PUT is answered within 1 s");
    assert_eq!(big_r.status(), 400);
    let body: Value = big_r.json().await.unwrap();
    let details = body["details"].to_string();
    assert!(
        details.contains(
            "admin API: route `big`.hosts: 100000 hosts, at most 100 (limits.max_hosts_per_route)"
        ),
        "{body}"
    );
    assert_eq!(small_r.status(), 200);
    assert_eq!(
        get(live.addr(), "small.example.test", &ca).await.unwrap().0,
        "hello from small"
    );
    assert!(live.server.shared.router.load().get("big").is_none());
}

#[tokio::test]
async fn a_body_over_the_cap_is_refused_with_413_naming_the_key() {
    let live = Live::start(&[], "");
    let mut big = spec("big", &["big.example.test"], &["127.0.0.1:1".into()]);
    // About 2.3 MB of JSON, over the default 64 KiB.
    big.hosts = many_hosts(100_000);
    let r = tokio::time::timeout(BOUND, live.put_route("big", &big))
        .await
        .expect("answered within 1 s");
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["error"],
        "the body is over 65536 bytes (admin.max_route_body)"
    );
}

#[tokio::test]
async fn an_app_record_over_the_body_cap_is_refused_the_same_way() {
    let live = Live::start(&[], "max_app_body = 4096\n");
    let r = reqwest::Client::new()
        .put(live.admin("/apps/p/shop"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(vec![b' '; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["error"],
        "the body is over 4096 bytes (admin.max_app_body)"
    );
}

#[tokio::test]
async fn backends_over_the_cap_are_refused_by_the_api() {
    let live = Live::start(&[], "[limits]\nmax_backends_per_route = 2\n");
    let s = spec(
        "b",
        &["b.example.test"],
        &[
            "127.0.0.1:1".into(),
            "127.0.0.1:2".into(),
            "127.0.0.1:3".into(),
        ],
    );
    let r = live.put_route("b", &s).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["details"][0],
        "admin API: route `b`.backends: 3 backends, at most 2 (limits.max_backends_per_route)"
    );
}

#[tokio::test]
async fn routes_over_the_total_cap_are_refused_by_the_api() {
    let live = Live::start(
        &[spec("a", &["a.example.test"], &["127.0.0.1:1".into()])],
        "[limits]\nmax_routes = 1\n",
    );
    let r = live
        .put_route(
            "b",
            &spec("b", &["b.example.test"], &["127.0.0.1:2".into()]),
        )
        .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["details"][0],
        "admin API: routes: 2 live routes, at most 1 (limits.max_routes)"
    );
    assert!(live.server.shared.router.load().get("b").is_none());
}

#[test]
fn check_refuses_a_routes_file_over_the_hosts_cap() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.toml");
    let mut s = spec("a", &["a.example.test"], &["127.0.0.1:1".into()]);
    s.hosts = many_hosts(101);
    write_routes(&routes, &[s]);
    let (code, err) = run_check(
        dir.path(),
        "routes_file = \"routes.toml\"\n[[listener]]\naddress = \"127.0.0.1:0\"\n",
    );
    assert_eq!(code, Some(3));
    assert!(
        err.contains(
            "routes.toml: route[0].hosts: 101 hosts, at most 100 (limits.max_hosts_per_route)"
        ),
        "{err}"
    );
    // Raised in the config, the same file passes.
    let (code, err) = run_check(
        dir.path(),
        "routes_file = \"routes.toml\"\n[[listener]]\naddress = \"127.0.0.1:0\"\n\
         [limits]\nmax_hosts_per_route = 101\n",
    );
    assert_eq!(code, Some(0), "{err}");
}
