//! DNS against a real dnsmasq on loopback (never a public server): backend
//! names that resolve to internal addresses are refused unless
//! allow-listed, a stopped DNS server is bridged by the stale cache for the
//! configured time only, and a custom domain needs its TXT ownership proof
//! for the app's own project. Real TLS through the proxy wherever a
//! connection is made.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use mse_proxy::apps::ownership::txt_value;

const HOST: &str = "app.example.test";

/// `host` is served end to end: the enclave's answer through the proxy.
async fn served(addr: SocketAddr, host: &str, ca: &Ca) -> bool {
    matches!(get(addr, host, ca).await, Ok((body, _)) if body == "hello from app")
}

fn refused_by(live: &Live, reason: &str) -> u64 {
    let m = &live.server.shared.metrics;
    m.backend_addresses_refused
        .with_label_values(&[reason])
        .get()
}

fn lookups(live: &Live, result: &str) -> u64 {
    live.server
        .shared
        .metrics
        .dns_lookups
        .with_label_values(&[result])
        .get()
}

fn outcome(live: &Live, outcome: &str) -> u64 {
    outcomes(&live.server, "r", "passthrough", outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_loopback_is_refused_unless_allow_listed() {
    let ca = Ca::new("enclave CA").unwrap();
    let (e, _) = enclave(&ca, &[HOST], "app").await;
    let dns = Dnsmasq::start(&[
        "--local=/test/",
        "--host-record=node.test,127.0.0.1",
        "--host-record=pair.test,127.0.0.1",
        "--host-record=pair.test,127.0.0.2",
    ])
    .await;
    let backend = format!("node.test:{}", e.addr.port());
    let live = Live::start(
        &[spec("r", &[HOST], std::slice::from_ref(&backend))],
        &format!("[dns]\nnameservers = [\"{}\"]\n", dns.addr),
    );

    // Refused: counted by reason and as the connection's own outcome, and
    // the backend is not blamed.
    assert!(!served(live.addr(), HOST, &ca).await);
    assert!(
        eventually(Duration::from_secs(5), || outcome(
            &live,
            "backend_address_refused"
        ) == 1)
        .await
    );
    assert_eq!(refused_by(&live, "loopback"), 1);
    assert!(!live.server.shared.health.is_cooling(e.addr));
    let text = live.scrape().await;
    assert_eq!(
        sample(
            &text,
            "mse_proxy_backend_addresses_refused_total{reason=\"loopback\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "mse_proxy_upstream_connect_failures_total{route=\"r\"}"
        ),
        Some(0.0),
        "a refused address is no backend failure:\n{text}"
    );
    promtool_accepts(&text).await;

    // The route allow-lists loopback: served.
    let mut allowed = spec("r", &[HOST], std::slice::from_ref(&backend));
    allowed.allow_internal_backends = Some(vec!["127.0.0.0/8".into()]);
    assert_eq!(live.put_route("r", &allowed).await.status(), 200);
    assert!(
        eventually_async(Duration::from_secs(5), || served(live.addr(), HOST, &ca)).await,
        "allow-listed loopback backend not served"
    );

    // Of several addresses only the refused ones are dropped: 127.0.0.2 is
    // outside this allow-list and is never tried (nothing listens there, a
    // try would count a connect failure).
    let mut pair = spec("r", &[HOST], &[format!("pair.test:{}", e.addr.port())]);
    pair.allow_internal_backends = Some(vec!["127.0.0.1/32".into()]);
    let before = refused_by(&live, "loopback");
    assert_eq!(live.put_route("r", &pair).await.status(), 200);
    assert!(
        eventually_async(Duration::from_secs(5), || served(live.addr(), HOST, &ca)).await,
        "the admitted address of two not served"
    );
    assert!(refused_by(&live, "loopback") > before);
    let failures = live
        .server
        .shared
        .metrics
        .connect_failures
        .with_label_values(&["r"])
        .get();
    assert_eq!(failures, 0, "a refused address was tried");

    // The admin listener stays refused, allow-list or not.
    let admin_port = live.server.admin_addr.unwrap().port();
    let mut admin = spec("r", &[HOST], &[format!("node.test:{admin_port}")]);
    admin.allow_internal_backends = Some(vec!["127.0.0.0/8".into()]);
    assert_eq!(live.put_route("r", &admin).await.status(), 200);
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            let _ = get(live.addr(), HOST, &ca).await;
            refused_by(&live, "admin") > 0
        })
        .await,
        "the admin listener was not refused as a backend"
    );

    // The config-wide allow-list serves every route.
    let wide = Live::start(
        &[spec("r", &[HOST], std::slice::from_ref(&backend))],
        &format!(
            "[dns]\nnameservers = [\"{}\"]\nallow_internal = [\"127.0.0.1\"]\n",
            dns.addr
        ),
    );
    assert!(served(wide.addr(), HOST, &ca).await);
    assert_eq!(refused_by(&wide, "loopback"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_dns_server_is_bridged_by_the_stale_cache_for_its_time_only() {
    let ca = Ca::new("enclave CA").unwrap();
    let (e, _) = enclave(&ca, &[HOST], "app").await;
    let present = ["--local=/test/", "--host-record=node.test,127.0.0.1"];
    let dns = Dnsmasq::start(&present).await;
    let live = Live::start(
        &[spec("r", &[HOST], &[format!("node.test:{}", e.addr.port())])],
        &format!(
            "[dns]\nnameservers = [\"{}\"]\ntimeout = \"300ms\"\nserve_stale = \"5s\"\nallow_internal = [\"127.0.0.0/8\"]\n",
            dns.addr
        ),
    );
    assert!(served(live.addr(), HOST, &ca).await);

    // NXDOMAIN is an answer: the stale entry is not served for it.
    let dns = dns
        .restart(&["--local=/test/", "--address=/node.test/"])
        .await;
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            !served(live.addr(), HOST, &ca).await && outcome(&live, "dns_error") > 0
        })
        .await,
        "an NXDOMAIN was bridged by the stale cache"
    );
    assert_eq!(lookups(&live, "stale"), 0);

    // Back, then the server stops: the last good answer is served...
    let dns = dns.restart(&present).await;
    assert!(
        eventually_async(Duration::from_secs(10), || served(live.addr(), HOST, &ca)).await,
        "not served once the name is back"
    );
    drop(dns);
    assert!(
        served(live.addr(), HOST, &ca).await,
        "not served from the stale cache while the DNS is down"
    );
    assert!(lookups(&live, "stale") > 0);

    // ...until it is older than serve_stale, then the name fails as
    // unavailable.
    assert!(
        eventually_async(Duration::from_secs(30), || async {
            !served(live.addr(), HOST, &ca).await && outcome(&live, "dns_unavailable") > 0
        })
        .await,
        "still served past dns.serve_stale"
    );
}

// ---- Custom domains: the TXT ownership proof ----

const INGRESS: &str = "proxy.mse.example.test";

fn apps_config(dns: &Dnsmasq) -> String {
    format!(
        "[dns]\nnameservers = [\"{}\"]\n[apps]\nplatform_domains = [\"apps.example.test\"]\ningress_hostname = \"{INGRESS}\"\ncname_policy = \"enforce\"\ncname_recheck = \"100ms\"\n",
        dns.addr
    )
}

/// Records: both custom domains CNAME to the ingress; `proofs` are the
/// TXT records as (domain, project).
fn records(proofs: &[(&str, &str)]) -> Vec<String> {
    let mut r = vec![
        "--local=/test/".to_string(),
        format!("--host-record={INGRESS},127.0.0.1"),
        format!("--cname=shop.customer.test,{INGRESS}"),
        format!("--cname=bare.customer.test,{INGRESS}"),
    ];
    for (domain, project) in proofs {
        r.push(format!(
            "--txt-record=_mse-challenge.{domain},{}",
            txt_value(project)
        ));
    }
    r
}

async fn dnsmasq(proofs: &[(&str, &str)]) -> Dnsmasq {
    let args = records(proofs);
    Dnsmasq::start(&args.iter().map(String::as_str).collect::<Vec<_>>()).await
}

/// The message of a 400's only violation, which must be about `domain_name`.
fn refusal(st: u16, body: &serde_json::Value) -> String {
    assert_eq!(st, 400, "{body}");
    assert_eq!(violation_fields(body), vec!["domain_name"], "{body}");
    body["violations"][0]["message"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_domain_needs_the_txt_proof_of_its_own_project() {
    let dns = dnsmasq(&[("shop.customer.test", "p")]).await;
    let ca = Ca::new("owner CA").unwrap();
    let (e, _) = enclave(&ca, &["shop.customer.test", "bare.customer.test"], "app").await;
    let live = Live::start(&[], &apps_config(&dns));

    // A CNAME but no proof: refused, naming the TXT record to publish.
    let (st, body) = put_app(
        &live,
        "p",
        "bare",
        &app_record(1, "bare.customer.test", None, e.addr, "running"),
    )
    .await;
    let msg = refusal(st, &body);
    for part in [
        "bare.customer.test",
        "_mse-challenge.bare.customer.test",
        &txt_value("p"),
        "there is no TXT record",
    ] {
        assert!(msg.contains(part), "`{part}` not in: {msg}");
    }
    let (_, gone) = admin_get(&live, "/apps/p/bare").await;
    assert!(
        gone.get("app").is_none() && gone["error"].is_string(),
        "{gone}"
    );

    // With its project's proof: admitted and served.
    let soon = (chrono::Utc::now() + chrono::TimeDelta::seconds(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut rec = app_record(2, "shop.customer.test", None, e.addr, "running");
    rec["expires_at"] = soon.into();
    let (st, body) = put_app(&live, "p", "shop", &rec).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["app"]["cname"]["shop.customer.test"]["state"], "ok");
    assert!(served(live.addr(), "shop.customer.test", &ca).await);

    // The app expires and releases the domain; its old proof is still in
    // the zone, and it does not let another project take the domain.
    assert!(
        eventually_async(Duration::from_secs(20), || async {
            admin_get(&live, "/apps/p/shop").await.0 == 404
        })
        .await,
        "the app did not expire"
    );
    let (st, body) = put_app(
        &live,
        "q",
        "shop",
        &app_record(3, "shop.customer.test", None, e.addr, "running"),
    )
    .await;
    let msg = refusal(st, &body);
    for part in [
        "_mse-challenge.shop.customer.test",
        &txt_value("q"),
        "other values",
        "project `q`",
    ] {
        assert!(msg.contains(part), "`{part}` not in: {msg}");
    }
    assert!(!served(live.addr(), "shop.customer.test", &ca).await);

    // The domain's owner publishes the new project's proof: admitted.
    let args = records(&[("shop.customer.test", "p"), ("shop.customer.test", "q")]);
    let dns = dns
        .restart(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let (st, body) = put_app(
        &live,
        "q",
        "shop",
        &app_record(3, "shop.customer.test", None, e.addr, "running"),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let mut conn = EchoConn::open(live.addr(), "shop.customer.test", &ca).await;

    // The recheck finds the proof gone (only the old project's is left):
    // the domain is withdrawn, and comes back with the proof.
    let args = records(&[("shop.customer.test", "p")]);
    let dns = dns
        .restart(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    assert!(
        conn.closed_within(Duration::from_secs(10)).await,
        "the domain was not withdrawn without its proof"
    );
    let (_, app) = admin_get(&live, "/apps/q/shop").await;
    assert_eq!(
        app["cname"]["shop.customer.test"]["state"], "wrong",
        "{app}"
    );
    let args = records(&[("shop.customer.test", "q")]);
    let _dns = dns
        .restart(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    assert!(
        eventually_async(Duration::from_secs(10), || served(
            live.addr(),
            "shop.customer.test",
            &ca
        ))
        .await,
        "the domain did not come back with its proof"
    );
}
