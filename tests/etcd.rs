//! Several instances sharing routes through a real etcd on loopback.

mod common;

use std::time::Duration;

use common::etcd::{Etcd, Link};
use common::process::{state_cmd, write_config, Immutable, ProxyProcess};
use common::*;
use serde_json::Value;

const PREFIX: &str = "/t/";

/// The `[etcd]` section for `endpoint`, with short timings so a lost link
/// shows within a second; `more` adds keys.
fn etcd_section(endpoint: &str, more: &str) -> String {
    format!(
        "[etcd]\nendpoints = [{endpoint:?}]\nprefix = {PREFIX:?}\ndial_timeout = \"500ms\"\n\
         request_timeout = \"1s\"\nheartbeat = \"300ms\"\nbackoff_max = \"300ms\"\n{more}"
    )
}

fn instance(endpoint: &str, more: &str) -> Live {
    Live::start(&[], &etcd_section(endpoint, more))
}

async fn delete(live: &Live, name: &str) -> reqwest::Response {
    reqwest::Client::new()
        .delete(live.admin(&format!("/routes/{name}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
}

async fn ready(live: &Live) -> u16 {
    reqwest::get(live.admin("/readyz"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// The value of an unlabelled sample in the instance's `/metrics`.
async fn metric(live: &Live, name: &str) -> f64 {
    let text = reqwest::get(live.admin("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

async fn connected(live: &Live) -> bool {
    metric(live, "mse_proxy_etcd_connected").await == 1.0
}

/// Both instances up and following etcd.
async fn pair(etcd_a: &str, etcd_b: &str) -> (Live, Live) {
    let (a, b) = (instance(etcd_a, ""), instance(etcd_b, ""));
    for l in [&a, &b] {
        assert!(
            eventually_async(Duration::from_secs(10), || connected(l)).await,
            "instance never reached etcd"
        );
    }
    (a, b)
}

async fn serves(live: &Live, sni: &str, ca: &Ca) -> bool {
    get(live.addr(), sni, ca).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_instance_is_served_by_the_other_within_a_second() {
    let etcd = Etcd::start().await;
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["shared.example.test"], "shared").await;
    let (a, b) = pair(&etcd.endpoint(), &etcd.endpoint()).await;
    assert_eq!(ready(&a).await, 200);

    let s = spec("shared", &["shared.example.test"], &[e.addr.to_string()]);
    let t = tokio::time::Instant::now();
    let r = a.put_route("shared", &s).await;
    assert_eq!(r.status(), 200, "the writer serves it when it answers");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["live_here"], true);
    assert!(body["etcd_revision"].as_i64().unwrap() > 0);
    assert!(serves(&a, "shared.example.test", &ca).await);
    // Within 1 s of the write request, B serves it too.
    let left = Duration::from_secs(1).saturating_sub(t.elapsed());
    assert!(
        eventually_async(left, || serves(&b, "shared.example.test", &ca)).await,
        "instance B did not serve A's write within 1 s of it"
    );
    let (body, _) = get(b.addr(), "shared.example.test", &ca).await.unwrap();
    assert_eq!(body, "hello from shared");
    let routes: Value = b.get("/routes/shared").await.json().await.unwrap();
    assert_eq!(routes["source"], "etcd");

    // A delete through B closes A's open connection too.
    let mut conn = EchoConn::open(a.addr(), "shared.example.test", &ca).await;
    assert_eq!(delete(&b, "shared").await.status(), 200);
    assert!(conn.closed_within(Duration::from_secs(2)).await);
    assert!(!serves(&a, "shared.example.test", &ca).await);
    assert_eq!(delete(&b, "shared").await.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_claimed_through_one_instance_is_refused_through_the_other() {
    let etcd = Etcd::start().await;
    let (a, b) = pair(&etcd.endpoint(), &etcd.endpoint()).await;
    let one = spec("one", &["Claimed.example.test"], &["127.0.0.1:9".into()]);
    assert_eq!(a.put_route("one", &one).await.status(), 200);
    let two = spec("two", &["claimed.example.test"], &["127.0.0.1:9".into()]);
    assert_refused(
        b.put_route("two", &two).await,
        409,
        "claimed by `routes/one` (etcd)",
    )
    .await;
    // The transaction refuses too when the instance's own table cannot
    // know: a claim whose owner is in etcd but not servable (invalid).
    let kv = etcd.client().await;
    kv.put(format!("{PREFIX}routes/ghost"), "not json", 0)
        .await
        .unwrap();
    kv.put(
        format!("{PREFIX}hosts/ghost.example.test"),
        "routes/ghost",
        0,
    )
    .await
    .unwrap();
    let four = spec("four", &["ghost.example.test"], &["127.0.0.1:9".into()]);
    let r = b.put_route("four", &four).await;
    assert_eq!(r.status(), 409);
    let text = r.text().await.unwrap();
    assert!(text.contains("claimed by `routes/ghost` (etcd)"), "{text}");
    // Moving the host to another name works once the first lets it go.
    let mut moved = one.clone();
    moved.hosts = vec!["other.example.test".into()];
    assert_eq!(a.put_route("one", &moved).await.status(), 200);
    // B's own table may not have the move yet: the store decides.
    assert_eq!(b.put_route("two", &two).await.status(), 200);
    let claim = kv
        .get(format!("{PREFIX}hosts/claimed.example.test"))
        .await
        .unwrap();
    assert_eq!(claim.kvs[0].value, b"routes/two");
    let old = kv
        .get(format!("{PREFIX}hosts/other.example.test"))
        .await
        .unwrap();
    assert_eq!(old.kvs[0].value, b"routes/one");

    // A claim left behind by a tool that deleted its owner's key alone is
    // taken over; one whose owner exists is not.
    kv.delete(format!("{PREFIX}routes/one")).await.unwrap();
    let gone = eventually_async(Duration::from_secs(2), || async {
        b.get("/routes/one").await.status() == 404
    })
    .await;
    assert!(gone, "B still serves the deleted route");
    let three = spec("three", &["other.example.test"], &["127.0.0.1:9".into()]);
    assert_eq!(b.put_route("three", &three).await.status(), 200);
    let taken = kv
        .get(format!("{PREFIX}hosts/other.example.test"))
        .await
        .unwrap();
    assert_eq!(taken.kvs[0].value, b"routes/three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_closes_connections_on_both_instances_and_the_lease_cleans_etcd() {
    let etcd = Etcd::start().await;
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["exp.example.test"], "exp").await;
    let (a, b) = pair(&etcd.endpoint(), &etcd.endpoint()).await;
    let mut s = spec("exp", &["exp.example.test"], &[e.addr.to_string()]);
    let at = chrono::Utc::now() + chrono::Duration::milliseconds(2500);
    s.expires_at = Some(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    assert_eq!(a.put_route("exp", &s).await.status(), 200);
    assert!(
        eventually_async(Duration::from_secs(1), || serves(
            &b,
            "exp.example.test",
            &ca
        ))
        .await
    );
    let mut on_a = EchoConn::open(a.addr(), "exp.example.test", &ca).await;
    let mut on_b = EchoConn::open(b.addr(), "exp.example.test", &ca).await;
    let (ca_, cb) = tokio::join!(
        on_a.closed_within(Duration::from_secs(4)),
        on_b.closed_within(Duration::from_secs(4))
    );
    assert!(ca_ && cb, "connections must close at the expiry on both");
    let late = chrono::Utc::now() - at;
    assert!(late >= chrono::Duration::zero(), "closed before the expiry");
    assert!(
        late < chrono::Duration::milliseconds(1000),
        "closed {late} after the expiry"
    );
    assert!(!serves(&a, "exp.example.test", &ca).await);
    assert!(!serves(&b, "exp.example.test", &ca).await);
    // The lease ends within about a second of the expiry: etcd forgets the
    // route and its host claim by itself.
    let kv = etcd.client().await;
    let gone = eventually_async(Duration::from_secs(5), || {
        let kv = kv.clone();
        async move {
            let all = mse_proxy::etcd::RangeRequest {
                key: PREFIX.into(),
                range_end: mse_proxy::etcd::range_end(PREFIX.as_bytes()),
                ..Default::default()
            };
            kv.range(all).await.unwrap().kvs.is_empty()
        }
    })
    .await;
    assert!(gone, "the lease did not remove the expired route from etcd");
    assert!(kv
        .get(format!("{PREFIX}routes/exp"))
        .await
        .unwrap()
        .kvs
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_killed_and_restarted_while_both_instances_keep_serving() {
    let mut etcd = Etcd::start().await;
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["k.example.test", "k2.example.test"], "k").await;
    let (a, b) = pair(&etcd.endpoint(), &etcd.endpoint()).await;
    let s = spec("k", &["k.example.test"], &[e.addr.to_string()]);
    assert_eq!(a.put_route("k", &s).await.status(), 200);
    assert!(eventually_async(Duration::from_secs(1), || serves(&b, "k.example.test", &ca)).await);
    let mut held = EchoConn::open(b.addr(), "k.example.test", &ca).await;

    etcd.kill();
    for l in [&a, &b] {
        assert!(
            eventually_async(Duration::from_secs(5), || async { !connected(l).await }).await,
            "the loss of etcd is not reported"
        );
        assert!(
            serves(l, "k.example.test", &ca).await,
            "routes must keep serving"
        );
        assert_eq!(ready(l).await, 200, "routes are still served: ready");
    }
    assert!(held.ping("still here").await);
    let writes = reqwest::get(a.admin("/readyz/writes")).await.unwrap();
    assert_eq!(
        writes.status(),
        503,
        "not ready for writes while etcd is away"
    );
    let s2 = spec("k2", &["k2.example.test"], &[e.addr.to_string()]);
    assert_eq!(
        a.put_route("k2", &s2).await.status(),
        503,
        "writes wait for etcd"
    );

    etcd.restart().await;
    for l in [&a, &b] {
        assert!(
            eventually_async(Duration::from_secs(10), || connected(l)).await,
            "no reconnection after etcd came back"
        );
    }
    assert!(metric(&a, "mse_proxy_etcd_reconnects_total").await >= 1.0);
    let writes = reqwest::get(a.admin("/readyz/writes")).await.unwrap();
    assert_eq!(writes.status(), 200);
    assert_eq!(b.put_route("k2", &s2).await.status(), 200);
    assert!(
        eventually_async(Duration::from_secs(1), || serves(
            &a,
            "k2.example.test",
            &ca
        ))
        .await
    );
    assert!(
        held.ping("after the restart").await,
        "no connection was cut"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_while_an_instance_is_cut_off_leaves_no_deleted_route_behind() {
    let etcd = Etcd::start().await;
    let link = Link::start(etcd.client_addr).await;
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["gone.example.test", "kept.example.test"], "c").await;
    let (a, b) = pair(&etcd.endpoint(), &link.endpoint()).await;
    for (name, host) in [("gone", "gone.example.test"), ("kept", "kept.example.test")] {
        let s = spec(name, &[host], &[e.addr.to_string()]);
        assert_eq!(a.put_route(name, &s).await.status(), 200);
    }
    assert!(
        eventually_async(Duration::from_secs(1), || serves(
            &b,
            "gone.example.test",
            &ca
        ))
        .await
    );
    let mut held = EchoConn::open(b.addr(), "gone.example.test", &ca).await;

    link.cut();
    assert!(
        eventually_async(Duration::from_secs(5), || async { !connected(&b).await }).await,
        "B did not notice the cut"
    );
    assert_eq!(delete(&a, "gone").await.status(), 200);
    // More history, then compact it all away: B cannot replay the delete.
    let kv = etcd.client().await;
    for i in 0..20 {
        kv.put(format!("{PREFIX}noise"), format!("{i}"), 0)
            .await
            .unwrap();
    }
    let rev = kv.get("x").await.unwrap().header.unwrap().revision;
    kv.compact(rev, true).await.unwrap();
    assert!(
        serves(&b, "gone.example.test", &ca).await,
        "B serves its last table meanwhile"
    );

    link.restore();
    assert!(
        eventually_async(Duration::from_secs(10), || connected(&b)).await,
        "B did not reconnect"
    );
    assert!(
        !serves(&b, "gone.example.test", &ca).await,
        "a deleted route came back"
    );
    assert!(serves(&b, "kept.example.test", &ca).await);
    assert!(held.closed_within(Duration::from_secs(2)).await);
    assert!(metric(&b, "mse_proxy_etcd_revision").await >= rev as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_flips_once_etcd_is_first_reached() {
    // Nothing listens on this port yet.
    let port = common::etcd::free_port();
    let live = instance(&format!("http://127.0.0.1:{port}"), "");
    assert_eq!(ready(&live).await, 503, "not ready before any etcd read");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        ready(&live).await,
        503,
        "still not ready while etcd is unreachable"
    );
    assert_eq!(metric(&live, "mse_proxy_etcd_connected").await, 0.0);

    let etcd = Etcd::start_on(port).await;
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["r.example.test"], "r").await;
    let kv = etcd.client().await;
    let s = spec("r", &["r.example.test"], &[e.addr.to_string()]);
    kv.put(
        format!("{PREFIX}routes/r"),
        serde_json::to_vec(&s).unwrap(),
        0,
    )
    .await
    .unwrap();
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            ready(&live).await == 200
        })
        .await,
        "/readyz never turned 200"
    );
    assert!(
        eventually_async(Duration::from_secs(2), || serves(
            &live,
            "r.example.test",
            &ca
        ))
        .await
    );
}

/// `/readyz` of a proxy process: status and body.
async fn readyz(p: &ProxyProcess) -> (u16, String) {
    match reqwest::get(p.url("/readyz")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// Waits until the local cache holds what the instance last applied.
async fn cache_caught_up(p: &ProxyProcess) {
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            let applied = p.metric("mse_proxy_etcd_revision").await;
            applied > 0.0 && p.metric("mse_proxy_etcd_cache_revision").await == applied
        })
        .await,
        "the local cache never caught up with etcd"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_cache_serves_flagged_stale_while_etcd_is_down_at_start_then_converges_deletions_included(
) {
    let mut etcd = Etcd::start().await;
    let ca = Ca::new("test CA").unwrap();
    let (keep, gone) = ("keep.example.test", "gone.example.test");
    let (e, _) = enclave(&ca, &[keep, gone], "cached").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &etcd_section(&etcd.endpoint(), ""));
    let serves_p = |p: &ProxyProcess, sni: &'static str| {
        let (addr, ca) = (p.addr, &ca);
        async move { get(addr, sni, ca).await.is_ok() }
    };

    let a = ProxyProcess::start(&cfg).await;
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            a.metric("mse_proxy_etcd_connected").await == 1.0
        })
        .await
    );
    for (name, host) in [("keep", keep), ("gone", gone)] {
        let s = serde_json::to_value(spec(name, &[host], &[e.addr.to_string()])).unwrap();
        let (st, body) = a.put(&format!("/routes/{name}"), &s).await;
        assert_eq!(st, 200, "{body}");
    }
    cache_caught_up(&a).await;
    assert!(a.terminate().await);
    assert!(dir.path().join("state/etcd-cache.redb").is_file());

    // While A is stopped, `gone` is deleted through another instance.
    let b = instance(&etcd.endpoint(), "");
    assert!(eventually_async(Duration::from_secs(10), || connected(&b)).await);
    assert_eq!(delete(&b, "gone").await.status(), 200);
    drop(b);
    etcd.kill();

    // etcd down at start: the cache is served, flagged stale.
    let c = ProxyProcess::start(&cfg).await;
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            readyz(&c).await.0 == 200
        })
        .await,
        "not ready on the local cache"
    );
    let body = readyz(&c).await.1;
    assert!(
        body.contains("stale: serving the local cache of etcd"),
        "{body}"
    );
    assert_eq!(c.metric("mse_proxy_etcd_on_fallback").await, 1.0);
    assert!(serves_p(&c, keep).await);
    assert!(
        serves_p(&c, gone).await,
        "the cache is what etcd held when A stopped"
    );
    let s =
        serde_json::to_value(spec("new", &["new.example.test"], &[e.addr.to_string()])).unwrap();
    assert_eq!(
        c.put("/routes/new", &s).await.0,
        503,
        "no writes while etcd is away"
    );

    // etcd is back: the instance converges to it, the deletion included.
    etcd.restart().await;
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            c.get("/routes/gone").await.0 == 404
        })
        .await,
        "the route deleted meanwhile is still served"
    );
    assert!(!serves_p(&c, gone).await);
    assert!(serves_p(&c, keep).await);
    assert_eq!(c.metric("mse_proxy_etcd_on_fallback").await, 0.0);
    let (st, body) = readyz(&c).await;
    assert_eq!(st, 200);
    assert!(!body.contains("stale"), "{body}");

    // And the cache now holds the converged set: a second start with etcd
    // down does not bring the deleted route back.
    cache_caught_up(&c).await;
    assert!(c.terminate().await);
    etcd.kill();
    let d = ProxyProcess::start(&cfg).await;
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            readyz(&d).await.0 == 200
        })
        .await
    );
    assert_eq!(d.metric("mse_proxy_etcd_on_fallback").await, 1.0);
    assert_eq!(d.get("/routes/gone").await.0, 404);
    assert_eq!(d.get("/routes/keep").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_write_the_disk_refuses_is_counted_and_shown_in_readyz() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &etcd_section(&etcd.endpoint(), ""));
    let p = ProxyProcess::start(&cfg).await;
    cache_caught_up(&p).await;
    assert_eq!(
        p.metric("mse_proxy_etcd_cache_write_errors_total").await,
        0.0
    );

    let guard = Immutable::set(&dir.path().join("state/etcd-cache.redb"));
    let s = serde_json::to_value(spec("r", &["r.example.test"], &["127.0.0.1:9".into()])).unwrap();
    let (st, body) = p.put("/routes/r", &s).await;
    assert_eq!(st, 200, "etcd took it: the cache is not the truth: {body}");
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            p.metric("mse_proxy_etcd_cache_write_errors_total").await >= 1.0
        })
        .await,
        "the failed cache write was not counted"
    );
    let (st, body) = readyz(&p).await;
    assert_eq!(st, 200, "still routing: still ready");
    assert!(
        body.contains("etcd cache: the last write failed") && body.contains("etcd-cache.redb"),
        "{body}"
    );

    // Writable again: the next change is cached and the report clears.
    drop(guard);
    let s =
        serde_json::to_value(spec("r2", &["r2.example.test"], &["127.0.0.1:9".into()])).unwrap();
    assert_eq!(p.put("/routes/r2", &s).await.0, 200);
    cache_caught_up(&p).await;
    let (_, body) = readyz(&p).await;
    assert!(!body.contains("etcd cache"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_just_before_sigterm_is_in_the_cache_a_stale_start_serves() {
    let mut etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &etcd_section(&etcd.endpoint(), ""));
    let p = ProxyProcess::start(&cfg).await;
    cache_caught_up(&p).await;
    let s = serde_json::to_value(spec(
        "late",
        &["late.example.test"],
        &["127.0.0.1:9".into()],
    ))
    .unwrap();
    let (st, body) = p.put("/routes/late", &s).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["live_here"], true);
    // At once: the cache's next write was due up to a second later.
    assert!(p.terminate().await);
    etcd.kill();
    let p = ProxyProcess::start(&cfg).await;
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            readyz(&p).await.0 == 200
        })
        .await
    );
    assert_eq!(p.metric("mse_proxy_etcd_on_fallback").await, 1.0);
    assert_eq!(
        p.get("/routes/late").await.0,
        200,
        "the last change was lost"
    );
}

#[test]
fn the_removed_fallback_file_setting_is_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &etcd_section(
            "http://127.0.0.1:1",
            "fallback_file = \"etcd-routes.json\"\n",
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mse-proxy"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("etcd.fallback_file: is no longer supported") && err.contains("state_dir"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_in_etcd_is_counted_and_does_not_hold_back_the_others() {
    let etcd = Etcd::start().await;
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["good.example.test"], "good").await;
    let a = instance(&etcd.endpoint(), "");
    assert!(eventually_async(Duration::from_secs(10), || connected(&a)).await);
    let kv = etcd.client().await;
    kv.put(
        format!("{PREFIX}routes/bad"),
        "{\"name\":\"bad\",\"hosts\":[]}",
        0,
    )
    .await
    .unwrap();
    let s = spec("good", &["good.example.test"], &[e.addr.to_string()]);
    kv.put(
        format!("{PREFIX}routes/good"),
        serde_json::to_vec(&s).unwrap(),
        0,
    )
    .await
    .unwrap();
    assert!(
        eventually_async(Duration::from_secs(2), || serves(
            &a,
            "good.example.test",
            &ca
        ))
        .await
    );
    assert_eq!(metric(&a, "mse_proxy_etcd_invalid_keys").await, 1.0);
    kv.delete(format!("{PREFIX}routes/bad")).await.unwrap();
    assert!(
        eventually_async(Duration::from_secs(2), || async {
            metric(&a, "mse_proxy_etcd_invalid_keys").await == 0.0
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_registered_through_one_instance_is_routed_by_the_other() {
    let etcd = Etcd::start().await;
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["web.apps.example.test"], "web").await;
    let (a, b) = pair(&etcd.endpoint(), &etcd.endpoint()).await;
    let rec = app_record(1, "web.apps.example.test", None, e.addr, "running");
    let (status, body) = put_app(&a, "proj", "web", &rec).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["live_here"], true);
    let deployed = body["app"]["record"]["deployed_at"].clone();
    assert!(deployed.is_string(), "{body}");
    assert!(serves(&a, "web.apps.example.test", &ca).await);
    assert!(
        eventually_async(Duration::from_secs(1), || serves(
            &b,
            "web.apps.example.test",
            &ca
        ))
        .await
    );
    // B holds the record as A admitted it: the same deployment time, so
    // the same expiry everywhere.
    let (status, on_b) = admin_get(&b, "/apps/proj/web").await;
    assert_eq!(status, 200);
    assert_eq!(on_b["record"]["deployed_at"], deployed);
    assert_eq!(on_b["expires_at"], body["app"]["expires_at"]);

    // The app's host is claimed in etcd: a route cannot take it.
    let thief = spec("thief", &["web.apps.example.test"], &[e.addr.to_string()]);
    let r = b.put_route("thief", &thief).await;
    assert_eq!(r.status(), 409);
    let text = r.text().await.unwrap();
    assert!(text.contains("claimed by `apps/proj/web` (etcd)"), "{text}");

    let mut conn = EchoConn::open(a.addr(), "web.apps.example.test", &ca).await;
    let r = reqwest::Client::new()
        .delete(b.admin("/apps/proj/web"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(conn.closed_within(Duration::from_secs(2)).await);
    assert_eq!(
        b.put_route("thief", &thief).await.status(),
        200,
        "the claim went with the app"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate_and_a_password() {
    let ca = Ca::new("etcd CA").unwrap();
    let tls = common::etcd::EtcdTls {
        ca_pem: ca.cert_pem(),
        server: ca.issue(&["127.0.0.1"]).unwrap(),
        client: ca.issue(&["mse-proxy"]).unwrap(),
    };
    let (client_pem, client_key) = (tls.client.cert_pem.clone(), tls.client.key_pem.clone());
    let etcd = Etcd::start_tls(tls).await;
    // Password authentication on top of the client certificate.
    etcd.enable_auth("s3cret").await;

    let files = format!(
        "username = \"root\"\npassword_file = {:?}\n[etcd.tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        etcd.file("password", "s3cret\n"),
        etcd.file("ca-copy.pem", &ca.cert_pem()),
        etcd.file("client.pem", &client_pem),
        etcd.file("client.key", &client_key),
    );
    let a = instance(&etcd.endpoint(), &files);
    assert!(
        eventually_async(Duration::from_secs(10), || connected(&a)).await,
        "no connection over TLS with a password"
    );
    let s = spec("t", &["t.example.test"], &["127.0.0.1:9".into()]);
    let r = a.put_route("t", &s).await;
    assert_eq!(r.status(), 200);

    // A wrong password never connects, and the instance stays not ready.
    let wrong = files.replace(
        &format!("{:?}", etcd.dir_path().join("password")),
        &format!("{:?}", etcd.file("wrong", "nope\n")),
    );
    let b = instance(&etcd.endpoint(), &wrong);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!connected(&b).await);
    assert_eq!(ready(&b).await, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_rebuilt_from_nothing_is_followed_though_its_revisions_went_back() {
    let mut etcd = Etcd::start().await;
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["old.example.test", "new.example.test"], "r").await;
    let a = instance(&etcd.endpoint(), "");
    assert!(eventually_async(Duration::from_secs(10), || connected(&a)).await);
    // Push the old store's revision well past what the new one will have.
    let kv = etcd.client().await;
    for i in 0..30 {
        kv.put(format!("{PREFIX}noise"), format!("{i}"), 0)
            .await
            .unwrap();
    }
    let old = spec("old", &["old.example.test"], &[e.addr.to_string()]);
    assert_eq!(a.put_route("old", &old).await.status(), 200);

    etcd.replace_with_empty().await;
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            !serves(&a, "old.example.test", &ca).await
        })
        .await,
        "a route of the old store is still served"
    );
    assert!(eventually_async(Duration::from_secs(10), || connected(&a)).await);
    let new = spec("new", &["new.example.test"], &[e.addr.to_string()]);
    let r = a.put_route("new", &new).await;
    assert_eq!(r.status(), 200, "writes work against the new store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["live_here"], true, "{body}");
    assert!(serves(&a, "new.example.test", &ca).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_larger_than_one_grpc_message_is_read_whole() {
    let etcd = Etcd::start().await;
    let kv = etcd.client().await;
    // 2,000 routes of 40 long host names each: about 6 MB of values, past
    // gRPC's 4 MiB limit for one answer, so the full read must page.
    let long = "x".repeat(40);
    for chunk in (0..2000).collect::<Vec<_>>().chunks(100) {
        let ops: Vec<mse_proxy::etcd::RequestOp> = chunk
            .iter()
            .map(|i| {
                let hosts: Vec<String> = (0..40)
                    .map(|j| format!("h{j}-{long}.r{i}.example.test"))
                    .collect();
                let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
                let s = spec(&format!("r{i}"), &hosts, &["127.0.0.1:9".into()]);
                mse_proxy::etcd::put_op(
                    format!("{PREFIX}routes/r{i}"),
                    serde_json::to_vec(&s).unwrap(),
                    0,
                )
            })
            .collect();
        kv.txn(Vec::new(), ops).await.unwrap();
    }
    let a = instance(&etcd.endpoint(), "");
    assert!(
        eventually_async(Duration::from_secs(20), || async { ready(&a).await == 200 }).await,
        "the full read did not complete"
    );
    assert_eq!(a.server.shared.router.load().len(), 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_route_left_out_for_want_of_a_certificate_is_served_once_one_is_reloaded() {
    let etcd = Etcd::start().await;
    let ca = Ca::new("test CA").unwrap();
    let platform = PlatformCert::new(&ca.issue(&["other.example.test"]).unwrap());
    let extra = format!("{}{}", platform.toml(), etcd_section(&etcd.endpoint(), ""));
    let a = Live::start(&[], &extra);
    assert!(eventually_async(Duration::from_secs(10), || connected(&a)).await);
    let (backend, leaf) = HttpBackend::tls(&ca, "tt.example.test").await;
    // Written by an instance that has the certificate; this one has not.
    let s = terminate_spec("tt", &["tt.example.test"], &[backend.addr], pinned(&leaf));
    let kv = etcd.client().await;
    kv.put(
        format!("{PREFIX}routes/tt"),
        serde_json::to_vec(&s).unwrap(),
        0,
    )
    .await
    .unwrap();
    assert!(
        eventually_async(Duration::from_secs(2), || async {
            metric(&a, "mse_proxy_etcd_routes_left_out").await == 1.0
        })
        .await,
        "the route without a certificate here must be left out, and counted"
    );
    assert!(!serves(&a, "tt.example.test", &ca).await);

    platform.replace(
        &ca.issue(&["tt.example.test", "other.example.test"])
            .unwrap(),
    );
    let r = reqwest::Client::new()
        .post(a.admin("/reload"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        eventually_async(Duration::from_secs(2), || async {
            metric(&a, "mse_proxy_etcd_routes_left_out").await == 0.0
        })
        .await,
        "the reload did not re-fit the etcd routes"
    );
    let (body, _) = get(a.addr(), "tt.example.test", &ca).await.unwrap();
    assert!(body.contains("hello from tt.example.test"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_auth_token_is_renewed_and_writes_go_on() {
    // Simple tokens that lapse after one idle second.
    let etcd = Etcd::start_args(&["--auth-token-ttl", "1"]).await;
    etcd.enable_auth("s3cret").await;
    let files = format!(
        "username = \"root\"\npassword_file = {:?}\n",
        etcd.file("password", "s3cret\n")
    );
    let a = instance(&etcd.endpoint(), &files);
    assert!(
        eventually_async(Duration::from_secs(10), || connected(&a)).await,
        "no connection with a password"
    );
    let first = spec("t1", &["t1.example.test"], &["127.0.0.1:9".into()]);
    assert_eq!(a.put_route("t1", &first).await.status(), 200);
    // Idle past the token's lifetime: the next write's token is refused,
    // and the client gets a new one instead of failing the write.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = spec("t2", &["t2.example.test"], &["127.0.0.1:9".into()]);
    let r = a.put_route("t2", &second).await;
    let status = r.status();
    assert_eq!(status, 200, "{}", r.text().await.unwrap());
    assert!(connected(&a).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_instance_state_imports_into_etcd_with_its_instants() {
    const APPS: &str = "[apps]\nplatform_domains = [\"apps.example.test\"]\n";
    let ca = Ca::new("test CA").unwrap();
    let app_host = "shop.apps.example.test";
    let (e, _) = enclave(&ca, &["one.example.test", app_host], "moved").await;
    let single = tempfile::tempdir().unwrap();
    let cfg_single = write_config(single.path(), APPS);
    let s = ProxyProcess::start(&cfg_single).await;
    let one =
        serde_json::to_value(spec("one", &["one.example.test"], &[e.addr.to_string()])).unwrap();
    assert_eq!(s.put("/routes/one", &one).await.0, 200);
    let record = app_record(1, app_host, None, e.addr, "running");
    let (st, body) = s.put("/apps/p1/shop", &record).await;
    assert_eq!(st, 200, "{body}");
    let (_, route_before) = s.get("/routes/one").await;
    let (_, app_before) = s.get("/apps/p1/shop").await;
    assert!(s.terminate().await);
    let backup = single.path().join("backup.json");
    let (code, err) = state_cmd(
        &cfg_single,
        &["export", "--output", backup.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{err}");

    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!("{APPS}{}", etcd_section(&etcd.endpoint(), "")),
    );
    let p = ProxyProcess::start(&cfg).await;
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            p.metric("mse_proxy_etcd_connected").await == 1.0
        })
        .await
    );
    let url = p.url("");
    let args = [
        "import",
        "--apply",
        &url,
        "--input",
        backup.to_str().unwrap(),
    ];
    let (code, err) = state_cmd(&cfg, &args);
    assert_eq!(code, Some(0), "{err}");
    let (st, mut route) = p.get("/routes/one").await;
    assert_eq!(st, 200, "{route}");
    assert_eq!(route["source"], "etcd");
    route["source"] = route_before["source"].clone();
    assert_eq!(route, route_before);
    let (st, app) = p.get("/apps/p1/shop").await;
    assert_eq!(st, 200, "{app}");
    assert_eq!(app, app_before, "same record, deployed_at and expires_at");
    assert_eq!(
        get(p.addr, app_host, &ca).await.unwrap().0,
        "hello from moved"
    );

    // Again: refused, nothing overwritten.
    let (code, err) = state_cmd(&cfg, &args);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("routes[0].name") && err.contains("already served"),
        "{err}"
    );

    // One entry the instance refuses: those written before it are undone.
    let mut past = app_record(2, "broken.apps.example.test", None, e.addr, "running");
    past["expires_at"] = "2020-01-01T00:00:00Z".into();
    let bad = serde_json::json!({"schema": 1,
        "routes": [serde_json::to_value(spec("two", &["two.example.test"], &[e.addr.to_string()])).unwrap()],
        "apps": [{"project": "p2", "name": "broken",
                  "record": past}]});
    let bad_file = dir.path().join("bad.json");
    std::fs::write(&bad_file, serde_json::to_vec(&bad).unwrap()).unwrap();
    let (code, err) = state_cmd(
        &cfg,
        &[
            "import",
            "--apply",
            &url,
            "--input",
            bad_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("apps[0]: 400") && err.contains("expires_at"),
        "{err}"
    );
    assert_eq!(
        p.get("/routes/two").await.0,
        404,
        "the route written first was undone"
    );
    assert_eq!(p.get("/apps/p2/broken").await.0, 404);
}

/// `etcd_applied_total{how}` of an instance.
async fn applied(live: &Live, how: &str) -> f64 {
    let text = live.get("/metrics").await.text().await.unwrap();
    sample(
        &text,
        &format!("mse_proxy_etcd_applied_total{{how=\"{how}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_change_applies_as_a_delta_and_a_clash_falls_back_to_the_whole_set() {
    let etcd = Etcd::start().await;
    let ca = Ca::new("test CA").unwrap();
    let (e, _) = enclave(&ca, &["one.example.test", "clash.example.test"], "one").await;
    let (local, _) = enclave(&ca, &["clash.example.test"], "local").await;
    let a = instance(&etcd.endpoint(), "");
    // B has a file route of its own on the host A will write.
    let b = Live::start(
        &[spec(
            "local",
            &["clash.example.test"],
            &[local.addr.to_string()],
        )],
        &etcd_section(&etcd.endpoint(), ""),
    );
    for l in [&a, &b] {
        assert!(eventually_async(Duration::from_secs(10), || connected(l)).await);
    }
    let full_at_start = applied(&b, "full").await;
    assert!(full_at_start >= 1.0, "the first read is a whole set");

    // One write elsewhere: B applies only it.
    let one = spec("one", &["one.example.test"], &[e.addr.to_string()]);
    assert_eq!(a.put_route("one", &one).await.status(), 200);
    assert!(
        eventually_async(Duration::from_secs(5), || serves(
            &b,
            "one.example.test",
            &ca
        ))
        .await
    );
    assert!(applied(&b, "delta").await >= 1.0);
    assert_eq!(applied(&b, "full").await, full_at_start);

    // A route on B's own host clashes: B refits the whole set, leaves it
    // out and keeps serving its own route there.
    let x = spec("x", &["clash.example.test"], &[e.addr.to_string()]);
    assert_eq!(a.put_route("x", &x).await.status(), 200);
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            metric(&b, "mse_proxy_etcd_routes_left_out").await == 1.0
        })
        .await
    );
    assert!(applied(&b, "full").await > full_at_start);
    let (body, _) = get(b.addr(), "clash.example.test", &ca).await.unwrap();
    assert_eq!(body, "hello from local");

    // While something is left out, a change goes whole again (a deletion
    // might let it in); once nothing is, deltas resume.
    assert_eq!(delete(&a, "x").await.status(), 200);
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            metric(&b, "mse_proxy_etcd_routes_left_out").await == 0.0
        })
        .await
    );
    let deltas = applied(&b, "delta").await;
    let two = spec("two", &["two.example.test"], &[e.addr.to_string()]);
    assert_eq!(a.put_route("two", &two).await.status(), 200);
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            applied(&b, "delta").await > deltas
        })
        .await
    );
    let routes: Value = b.get("/routes").await.json().await.unwrap();
    let names: Vec<&str> = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["local", "one", "two"]);
    // And a deletion by delta: B stops serving `one`.
    assert_eq!(delete(&a, "one").await.status(), 200);
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            !serves(&b, "one.example.test", &ca).await
        })
        .await
    );
}
