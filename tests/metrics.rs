//! The metrics endpoint: exact counts after scripted traffic, and output
//! that promtool accepts.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_match_scripted_traffic_and_promtool_accepts_them() {
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["a.example.test"], "a").await;
    let live = Live::start(
        &[spec("a", &["a.example.test"], &[e.addr.to_string()])],
        "[timeouts]\nclient_hello = \"300ms\"\n",
    );
    // Two ok, one unknown SNI, one hello timeout.
    for _ in 0..2 {
        assert_eq!(
            get(live.addr(), "a.example.test", &ca).await.unwrap().0,
            "hello from a"
        );
    }
    assert!(get(live.addr(), "nope.example.test", &ca).await.is_err());
    let mut stall = TcpStream::connect(live.addr()).await.unwrap();
    stall.write_all(&captured_hello()[..10]).await.unwrap();
    let (_, closed) = read_to_close(&mut stall, Duration::from_secs(10)).await;
    assert!(closed);

    let ok = "mse_proxy_connections_total{mode=\"passthrough\",outcome=\"ok\",route=\"a\"}";
    let timeout =
        "mse_proxy_connections_total{mode=\"(none)\",outcome=\"hello_timeout\",route=\"(none)\"}";
    let mut text = String::new();
    for _ in 0..100 {
        text = live.scrape().await;
        if sample(&text, ok) == Some(2.0) && sample(&text, timeout) == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sample(&text, ok), Some(2.0), "{text}");
    assert_eq!(sample(&text, timeout), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "mse_proxy_connections_total{mode=\"(none)\",outcome=\"unknown_sni\",route=\"(none)\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "mse_proxy_connections_accepted_total"),
        Some(4.0)
    );
    assert_eq!(
        sample(&text, "mse_proxy_client_hello_duration_seconds_count"),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "mse_proxy_upstream_connect_duration_seconds_count{route=\"a\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "mse_proxy_connection_duration_seconds_count{route=\"a\"}"
        ),
        Some(2.0)
    );
    assert!(sample(&text, "mse_proxy_bytes_total{direction=\"in\",route=\"a\"}").unwrap() > 1000.0);
    assert!(
        sample(
            &text,
            "mse_proxy_bytes_total{direction=\"out\",route=\"a\"}"
        )
        .unwrap()
            > 1000.0
    );
    assert_eq!(
        sample(&text, "mse_proxy_routes{mode=\"passthrough\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "mse_proxy_connections_open{route=\"a\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "mse_proxy_route_reloads_total{result=\"ok\",source=\"start\"}"
        ),
        Some(1.0)
    );
    assert!(sample(&text, "mse_proxy_process_open_fds").unwrap() > 0.0);
    // No raw SNI ever becomes a label value.
    assert!(!text.contains("nope.example.test"));

    promtool_accepts(&text).await;
}

#[tokio::test]
async fn removed_routes_leave_no_series_and_reloads_are_counted() {
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["gone.example.test"], "gone").await;
    let live = Live::start(
        &[spec("gone", &["gone.example.test"], &[e.addr.to_string()])],
        "",
    );
    get(live.addr(), "gone.example.test", &ca).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || live.server.open_connections()
            == 0)
        .await
    );
    assert!(live.scrape().await.contains("route=\"gone\""));
    write_routes(&live.routes_path, &[]);
    live.server.control.reload_file().await.unwrap();
    std::fs::write(&live.routes_path, "not toml [").unwrap();
    assert!(live.server.control.reload_file().await.is_err());
    // Dropped once its connections have counted their outcomes: a second
    // after the last one ended.
    let mut text = String::new();
    for _ in 0..50 {
        text = live.scrape().await;
        if !text.contains("route=\"gone\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!text.contains("route=\"gone\""), "{text}");
    assert_eq!(
        sample(
            &text,
            "mse_proxy_route_reloads_total{result=\"ok\",source=\"reload\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "mse_proxy_route_reloads_total{result=\"error\",source=\"reload\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "mse_proxy_routes{mode=\"passthrough\"}"),
        Some(0.0)
    );
}

#[tokio::test]
async fn per_route_labels_can_be_turned_off() {
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["a.example.test"], "a").await;
    let live = Live::start(
        &[spec("a", &["a.example.test"], &[e.addr.to_string()])],
        "[metrics]\nper_route = false\n",
    );
    get(live.addr(), "a.example.test", &ca).await.unwrap();
    let ok = "mse_proxy_connections_total{mode=\"passthrough\",outcome=\"ok\",route=\"(all)\"}";
    let mut text = String::new();
    for _ in 0..100 {
        text = live.scrape().await;
        if sample(&text, ok) == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sample(&text, ok), Some(1.0), "{text}");
    assert!(!text.contains("route=\"a\""), "{text}");
}

#[tokio::test]
async fn health_and_readiness() {
    let live = Live::start(&[], "");
    let r = reqwest::get(live.admin("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::get(live.admin("/readyz")).await.unwrap();
    assert_eq!(r.status(), 200, "ready once the first route set is live");
}
