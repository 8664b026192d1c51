//! A route is "changed" (and its connections closed) only when what it does
//! changed. An edit of only how it is written (host case, a trailing dot,
//! host order, the close grace) keeps its live connections, from the routes
//! file and from the API alike; a real change still closes them.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_case_order_or_dot_edit_keeps_connections_and_a_backend_change_closes_them() {
    let ca = Ca::new("test CA").unwrap();
    let hosts = ["a.example.test", "b.example.test"];
    let (a, _) = enclave(&ca, &hosts, "a").await;
    let (a2, _) = enclave(&ca, &hosts, "a2").await;
    let original = spec("a", &hosts, &[a.addr.to_string()]);
    let live = Live::start(std::slice::from_ref(&original), "");
    let mut conn = EchoConn::open(live.addr(), "a.example.test", &ca).await;

    // The file: other case, a trailing dot, the other order, a grace.
    let mut restyled = spec(
        "a",
        &["B.Example.TEST.", "A.EXAMPLE.test"],
        &[a.addr.to_string()],
    );
    restyled.close_grace = Some("0s".into());
    write_routes(&live.routes_path, std::slice::from_ref(&restyled));
    let applied = live.server.control.reload_file().await.unwrap();
    assert_eq!((applied.unchanged, applied.changed), (1, 0), "{applied:?}");
    assert!(
        conn.ping("after the file edit").await,
        "a cosmetic file edit closed the connection"
    );
    // The API shows the route as now written, and counts the connection.
    let (status, view) = admin_get(&live, "/routes/a").await;
    assert_eq!(status, 200);
    assert_eq!(
        view["hosts"],
        serde_json::json!(["B.Example.TEST.", "A.EXAMPLE.test"])
    );
    assert_eq!(view["open_connections"], 1);

    // The API, likewise (the route moves to the API source on the way).
    let by_api = spec(
        "a",
        &["a.example.test.", "b.EXAMPLE.test"],
        &[a.addr.to_string()],
    );
    let r = live.put_route("a", &by_api).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["applied"]["unchanged"], 1, "{body}");
    assert_eq!(body["applied"]["changed"], 0, "{body}");
    assert!(
        conn.ping("after the API edit").await,
        "a cosmetic API edit closed the connection"
    );

    // A real change (another backend) is a redeploy: the connection closes.
    let moved = spec("a", &hosts, &[a2.addr.to_string()]);
    let r = live.put_route("a", &moved).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["applied"]["changed"], 1, "{body}");
    assert!(
        conn.closed_within(Duration::from_secs(5)).await,
        "a backend change left the old connection open"
    );
    assert_eq!(
        get(live.addr(), "b.example.test", &ca).await.unwrap().0,
        "hello from a2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grace_kept_through_a_cosmetic_edit_still_holds_at_removal() {
    let ca = Ca::new("test CA").unwrap();
    let (a, _) = enclave(&ca, &["a.example.test"], "a").await;
    let mut graced = spec("a", &["a.example.test"], &[a.addr.to_string()]);
    graced.close_grace = Some("1h".into());
    let live = Live::start(std::slice::from_ref(&graced), "");
    let mut conn = EchoConn::open(live.addr(), "a.example.test", &ca).await;
    let mut restyled = graced.clone();
    restyled.hosts = vec!["A.example.test".into()];
    write_routes(&live.routes_path, std::slice::from_ref(&restyled));
    live.server.control.reload_file().await.unwrap();
    // Removed: the connection, opened before the edit, gets its hour.
    write_routes(&live.routes_path, &[]);
    let applied = live.server.control.reload_file().await.unwrap();
    assert_eq!(applied.removed, 1);
    assert!(conn.ping("inside the grace").await, "the grace was skipped");
}
