//! Fairness between tenants: a route's connection cap and new-connection
//! rate, and a client's new-connection rate. A flood on one app, or from
//! one client, is refused and counted, while other apps and other clients
//! are still served. Real TLS end to end (rustls clients, stand-in rustls
//! enclaves and backends), loopback only, every loop bounded.

mod common;

use std::time::Duration;

use common::*;
use mse_proxy::config::route_limits::RouteLimitsSpec;
use mse_proxy::config::routes::RouteSpec;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

fn limited(mut s: RouteSpec, limits: RouteLimitsSpec) -> RouteSpec {
    s.limits = Some(limits);
    s
}

fn cap(n: usize) -> RouteLimitsSpec {
    RouteLimitsSpec {
        max_connections: Some(n),
        ..Default::default()
    }
}

/// Attempts `n` TLS connections to `sni` from `from`, one after the other,
/// each either completing its handshake with the backend (held, returned)
/// or refused by the proxy (counted). Also returns how long that took.
async fn attempt(
    n: usize,
    from: [u8; 4],
    p: &mse_proxy::proxy::ProxyHandle,
    sni: &str,
    ca: &Ca,
) -> (Vec<EchoConn>, usize, Duration) {
    let started = Instant::now();
    let (mut served, mut refused) = (Vec::new(), 0);
    for _ in 0..n {
        let tls = tokio::time::timeout(
            Duration::from_secs(10),
            tls_connect_from(from, addr(p), sni, ca),
        )
        .await
        .expect("the proxy answers every attempt, served or refused");
        match tls {
            Ok(tls) => served.push(EchoConn(tls)),
            Err(_) => refused += 1,
        }
    }
    (served, refused, started.elapsed())
}

/// The most a bucket of `per_second` and `burst` admits over `took`.
fn most_admitted(per_second: u32, burst: u32, took: Duration) -> usize {
    burst as usize + (took.as_secs_f64() * f64::from(per_second)).ceil() as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_one_route_at_its_cap_leaves_another_route_served() {
    let ca = Ca::new("test CA").unwrap();
    let (a, _) = enclave(&ca, &["a.example.test"], "a").await;
    let (b, _) = enclave(&ca, &["b.example.test"], "b").await;
    let p = proxy(
        config(""),
        &[
            limited(
                spec("a", &["a.example.test"], &[a.addr.to_string()]),
                cap(5),
            ),
            spec("b", &["b.example.test"], &[b.addr.to_string()]),
        ],
    );
    // Route a is full: five connections held, relaying.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(EchoConn::open(addr(&p), "a.example.test", &ca).await);
    }
    // A flood on a, from several clients: every new connection is refused
    // after its hello, and never reaches a's enclave.
    let handshakes_before = a.handshakes();
    let mut refused = 0;
    for from in [[127, 0, 0, 2], [127, 0, 0, 4], [127, 0, 0, 5]] {
        let (served, r, _) = attempt(20, from, &p, "a.example.test", &ca).await;
        assert!(served.is_empty(), "route a served past its cap");
        refused += r;
    }
    assert_eq!(refused, 60);
    assert!(
        eventually(Duration::from_secs(5), || outcomes(
            &p,
            "a",
            "passthrough",
            "route_limit"
        ) == 60)
        .await,
        "route_limit on a: {}",
        outcomes(&p, "a", "passthrough", "route_limit")
    );
    assert_eq!(a.handshakes(), handshakes_before);
    // Route b, on the same listener, is served, past a's cap, by the same
    // clients, while a's flood is held at its cap.
    let mut on_b = Vec::new();
    for from in [[127, 0, 0, 2], [127, 0, 0, 3]] {
        for _ in 0..5 {
            let tls = tls_connect_from(from, addr(&p), "b.example.test", &ca)
                .await
                .expect("route b serves while a is full");
            let mut c = EchoConn(tls);
            assert!(c.ping("to b").await);
            on_b.push(c);
        }
    }
    assert_eq!(
        get(addr(&p), "b.example.test", &ca).await.unwrap().0,
        "hello from b"
    );
    assert_eq!(outcomes(&p, "b", "passthrough", "route_limit"), 0);
    // a's own connections were never disturbed; one leaving frees a slot.
    for c in &mut held {
        assert!(c.ping("still a").await);
    }
    drop(held.pop());
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            tls_connect(addr(&p), "a.example.test", &ca).await.is_ok()
        })
        .await,
        "a slot freed on a is taken again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_route_cap_refuses_new_connections_and_keeps_live_ones() {
    let ca = Ca::new("test CA").unwrap();
    let (a, _) = enclave(&ca, &["a.example.test"], "a").await;
    let base = spec("a", &["a.example.test"], &[a.addr.to_string()]);
    let live = Live::start(&[limited(base.clone(), cap(4))], "");
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(EchoConn::open(live.addr(), "a.example.test", &ca).await);
    }
    // Lowered to 2 in the routes file: a limits change, not a redeploy.
    let applied = live.applied();
    write_routes(&live.routes_path, &[limited(base, cap(2))]);
    assert!(eventually(Duration::from_secs(10), || live.applied() > applied).await);
    for c in &mut held {
        assert!(c.ping("kept").await, "a live connection was closed");
    }
    assert!(tls_connect(live.addr(), "a.example.test", &ca)
        .await
        .is_err());
    // Under the new cap only once two have left: two of four leave, still full.
    held.truncate(2);
    let open = || {
        live.server
            .shared
            .router
            .load()
            .get("a")
            .unwrap()
            .open_connections()
    };
    assert!(
        eventually(Duration::from_secs(5), || open() == 2).await,
        "{} open",
        open()
    );
    assert!(tls_connect(live.addr(), "a.example.test", &ca)
        .await
        .is_err());
    held.truncate(1);
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            tls_connect(live.addr(), "a.example.test", &ca)
                .await
                .is_ok()
        })
        .await
    );
    let text = live.scrape().await;
    let refused = sample(
        &text,
        "mse_proxy_connections_total{mode=\"passthrough\",outcome=\"route_limit\",route=\"a\"}",
    );
    assert!(refused.is_some_and(|n| n >= 2.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_past_its_rate_is_refused_and_counted_while_another_connects() {
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["ok.example.test"], "ok").await;
    let (per_second, burst) = (1, 5);
    let p = proxy(
        config(&format!(
            "[limits]\nclient_new_connections_per_second = {per_second}\n\
             client_new_connections_burst = {burst}\n"
        )),
        &[spec("ok", &["ok.example.test"], &[e.addr.to_string()])],
    );
    let (served, refused, took) = attempt(30, [127, 0, 0, 2], &p, "ok.example.test", &ca).await;
    assert!(served.len() >= burst as usize, "the burst passes");
    assert!(
        served.len() <= most_admitted(per_second, burst, took),
        "{} served in {took:?}",
        served.len()
    );
    assert_eq!(served.len() + refused, 30);
    assert!(
        eventually(Duration::from_secs(5), || outcomes(
            &p,
            "(none)",
            "(none)",
            "client_rate_limit"
        ) == refused as u64)
        .await,
        "client_rate_limit {} for {refused} refused",
        outcomes(&p, "(none)", "(none)", "client_rate_limit")
    );
    // Another client has a bucket of its own.
    let tls = tls_connect_from([127, 0, 0, 3], addr(&p), "ok.example.test", &ca).await;
    let mut other = EchoConn(tls.expect("127.0.0.3 connects"));
    assert!(other.ping("from .3").await);
    // The refused client's held connections were never cut.
    for mut c in served {
        assert!(c.ping("held").await);
    }
}

/// A plain TCP backend that takes connections and holds them until the
/// other side closes.
async fn sink() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut sink).await;
            });
        }
    });
    to
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limits_the_client_a_trusted_proxy_header_names() {
    let backend = sink().await;
    let cfg = mse_proxy::config::Config::from_toml(
        std::path::Path::new("t.toml"),
        "[limits]\nclient_new_connections_per_second = 1\nclient_new_connections_burst = 3\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\n\
         trusted_proxies = [\"127.0.0.0/8\"]\n",
    )
    .unwrap();
    let p = proxy(cfg, &[spec("ok", &[CAPTURED_SNI], &[backend.to_string()])]);
    let hello = captured_hello();
    // Every connection comes from the balancer (127.0.0.1); its PROXY
    // header names the client.
    let through = |client: &'static str| {
        let hello = hello.clone();
        let to = addr(&p);
        async move {
            let mut s = TcpStream::connect(to).await.unwrap();
            let header = format!("PROXY TCP4 {client} 192.0.2.1 40000 443\r\n");
            let _ = s.write_all(header.as_bytes()).await;
            let _ = s.write_all(&hello).await;
            s
        }
    };
    let open = || p.shared.router.load().get("ok").unwrap().open_connections();
    let refused = || outcomes(&p, "(none)", "(none)", "client_rate_limit");
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(through("203.0.113.7").await);
    }
    // Each of the ten is either relayed to the backend or refused.
    assert!(
        eventually(Duration::from_secs(5), || refused() as usize + open() == 10).await,
        "{} refused, {} open",
        refused(),
        open()
    );
    let before = refused();
    assert!(before >= 1, "ten at once past a burst of three");
    assert!(before <= 7, "the burst of three passed: {before} refused");
    // Another client behind the same balancer has a bucket of its own.
    held.push(through("203.0.113.8").await);
    let want = 10 - before as usize + 1;
    assert!(
        eventually(Duration::from_secs(5), || open() == want).await,
        "{} open, {want} expected",
        open()
    );
    assert_eq!(refused(), before, "203.0.113.8 was refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminate_route_past_its_rate_is_refused_and_counted_while_another_route_serves() {
    let platform_ca = Ca::new("platform CA").unwrap();
    let cert = PlatformCert::new(&platform_ca.issue(&["*.apps.example.test"]).unwrap());
    let enclave_ca = Ca::new("enclave CA").unwrap();
    let (ba, leaf_a) = HttpBackend::tls(&enclave_ca, "a").await;
    let (bb, leaf_b) = HttpBackend::tls(&enclave_ca, "b").await;
    let (per_second, burst) = (1, 3);
    let p = proxy(
        config(&cert.toml()),
        &[
            limited(
                terminate_spec("a", &["a.apps.example.test"], &[ba.addr], pinned(&leaf_a)),
                RouteLimitsSpec {
                    new_connections_per_second: Some(per_second),
                    new_connections_burst: Some(burst),
                    ..Default::default()
                },
            ),
            terminate_spec("b", &["b.apps.example.test"], &[bb.addr], pinned(&leaf_b)),
        ],
    );
    let started = Instant::now();
    let (mut served, mut refused) = (0, 0);
    // From three clients, so that no client's own rate is what refuses.
    for i in 0..15u8 {
        let from = [127, 0, 0, 2 + i % 3];
        let tls = tls_connect_from(from, addr(&p), "a.apps.example.test", &platform_ca).await;
        match tls {
            Ok(_) => served += 1,
            Err(_) => refused += 1,
        }
    }
    let took = started.elapsed();
    assert!(served >= burst as usize);
    assert!(
        served <= most_admitted(per_second, burst, took),
        "{served} served in {took:?}"
    );
    assert!(refused >= 1);
    assert!(
        eventually(Duration::from_secs(5), || outcomes(
            &p,
            "a",
            "terminate",
            "route_rate_limit"
        ) == refused as u64)
        .await,
        "route_rate_limit {} for {refused} refused",
        outcomes(&p, "a", "terminate", "route_rate_limit")
    );
    // Route b has its own (default) rate: served at once, many times over.
    for _ in 0..10 {
        assert_eq!(
            get(addr(&p), "b.apps.example.test", &platform_ca)
                .await
                .unwrap()
                .0,
            "hello from b over HTTP/1.1"
        );
    }
    assert_eq!(outcomes(&p, "b", "terminate", "route_rate_limit"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_and_app_limits_through_the_admin_api_are_bounded_and_applied() {
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["api.example.test", "app.example.test"], "e").await;
    let live = Live::start(&[], "");
    // A route's JSON: a cap past the bound is refused, naming the field.
    let mut route = spec("api", &["api.example.test"], &[e.addr.to_string()]);
    route.limits = Some(cap(20_000_000));
    let r = live.put_route("api", &route).await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body.to_string()
            .contains("limits.max_connections: 20000000 is more than the most allowed"),
        "{body}"
    );
    // Within the bound: applied.
    route.limits = Some(cap(1));
    assert_eq!(live.put_route("api", &route).await.status(), 200);
    let mut held = EchoConn::open(live.addr(), "api.example.test", &ca).await;
    assert!(tls_connect(live.addr(), "api.example.test", &ca)
        .await
        .is_err());
    assert!(held.ping("held").await);
    let (_, listed) = admin_get(&live, "/routes/api").await;
    assert_eq!(listed["limits"]["max_connections"], 1, "{listed}");

    // An app record's limits: bounded the same way, then given to its route.
    let mut rec = app_record(1, "app.example.test", None, e.addr, "running");
    rec["limits"] = serde_json::json!({"new_connections_burst": 0});
    let (status, body) = put_app(&live, "p", "shop", &rec).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(violation_fields(&body), ["limits"], "{body}");
    rec["limits"] = serde_json::json!({"max_connections": 2});
    let (status, body) = put_app(&live, "p", "shop", &rec).await;
    assert_eq!(status, 200, "{body}");
    let _a = EchoConn::open(live.addr(), "app.example.test", &ca).await;
    let _b = EchoConn::open(live.addr(), "app.example.test", &ca).await;
    assert!(tls_connect(live.addr(), "app.example.test", &ca)
        .await
        .is_err());
    let text = live.scrape().await;
    for route in ["api", "app.p.shop"] {
        let series = format!(
            "mse_proxy_connections_total{{mode=\"passthrough\",outcome=\"route_limit\",route=\"{route}\"}}"
        );
        assert!(
            sample(&text, &series).is_some_and(|n| n >= 1.0),
            "{series} in\n{text}"
        );
    }
}
