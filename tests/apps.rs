//! Apps end to end: records through the admin API become routes under the
//! platform's rules (redeploys, two hostnames, status, operator mode,
//! custom-domain CNAMEs against a real DNS server on loopback), and
//! `mse-proxy app plan` run as the real binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The platform's app domain in these tests.
const APPS: &str = "[apps]\nplatform_domains = [\"apps.example.test\"]\n";

/// The live routes as (name, source, hosts).
async fn live_routes(live: &Live) -> Vec<(String, String, Vec<String>)> {
    let (_, body) = admin_get(live, "/routes").await;
    body["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["source"].as_str().unwrap().to_string(),
                r["hosts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| h.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

async fn refused(live: &Live, host: &str, ca: &Ca) -> bool {
    match get(live.addr(), host, ca).await {
        Err(e) => e.to_string().contains("UnrecognisedName"),
        Ok(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeploy_of_the_same_app_switches_nodes_and_closes_old_connections() {
    let ca = Ca::new("enclave CA").unwrap();
    let host = "shop.apps.example.test";
    let (a, _) = enclave(&ca, &[host], "a").await;
    let (b, _) = enclave(&ca, &[host], "b").await;
    let live = Live::start(&[], APPS);

    let (st, body) = put_app(
        &live,
        "p1",
        "shop",
        &app_record(1, host, None, a.addr, "running"),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["app"]["routes"][0]["name"], "app.p1.shop");
    assert_eq!(get(live.addr(), host, &ca).await.unwrap().0, "hello from a");
    let mut old = EchoConn::open(live.addr(), host, &ca).await;

    // A new deployment under the same (project, name): new id, new node.
    let (st, body) = put_app(
        &live,
        "p1",
        "shop",
        &app_record(2, host, None, b.addr, "running"),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["applied"]["changed"], 1, "{body}");
    assert!(
        old.closed_within(Duration::from_secs(5)).await,
        "a connection to the old node survived the redeploy"
    );
    assert_eq!(get(live.addr(), host, &ca).await.unwrap().0, "hello from b");

    // One app, one route, shown with the app it came from.
    let (_, routes) = admin_get(&live, "/routes").await;
    let routes = routes["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0]["name"], "app.p1.shop");
    assert_eq!(routes[0]["source"], "app");
    assert_eq!(routes[0]["backends"][0], b.addr.to_string());
    assert_eq!(routes[0]["app"]["project"], "p1");
    assert_eq!(routes[0]["app"]["name"], "shop");
    let (st, app) = admin_get(&live, "/apps/p1/shop").await;
    assert_eq!(st, 200);
    assert_eq!(app["record"]["id"], uuid_of(2));
    assert_eq!(app["expiry_rule"], "default_lifetime");
    let (_, all) = admin_get(&live, "/apps").await;
    assert_eq!(all["apps"].as_array().unwrap().len(), 1);

    // Another app cannot take the hostname.
    let (st, body) = put_app(
        &live,
        "p1",
        "blog",
        &app_record(3, host, None, a.addr, "running"),
    )
    .await;
    assert_eq!(st, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains(host), "{body}");

    assert_eq!(delete_app(&live, "p1", "shop").await, 200);
    assert!(refused(&live, host, &ca).await);
    assert_eq!(delete_app(&live, "p1", "shop").await, 404);
    assert_eq!(admin_get(&live, "/apps/p1/shop").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_hostnames_route_to_the_node_and_the_status_decides_which() {
    let ca = Ca::new("enclave CA").unwrap();
    let (public, config) = ("shop.apps.example.test", "shop-cfg.apps.example.test");
    let (e, _) = enclave(&ca, &[public, config], "enclave").await;
    let live = Live::start(&[], APPS);
    let rec = |status| app_record(1, public, Some(config), e.addr, status);

    // Spawning, then initializing: only the configuration hostname routes.
    for status in ["spawning", "initializing"] {
        let (st, body) = put_app(&live, "p", "shop", &rec(status)).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(
            get(live.addr(), config, &ca).await.unwrap().0,
            "hello from enclave"
        );
        assert!(
            refused(&live, public, &ca).await,
            "{status}: public host routed"
        );
    }
    // A secrets upload in flight on the configuration hostname...
    let mut upload = EchoConn::open(live.addr(), config, &ca).await;

    // Running: both hostnames, one node.
    let (st, body) = put_app(&live, "p", "shop", &rec("running")).await;
    assert_eq!(st, 200, "{body}");
    for h in [public, config] {
        assert_eq!(
            get(live.addr(), h, &ca).await.unwrap().0,
            "hello from enclave",
            "{h}"
        );
    }
    // ...is not cut when the app starts running: its route did not change.
    assert!(
        upload.ping("still there").await,
        "the status change closed the config route's connection"
    );
    let mut routes = live_routes(&live).await;
    routes.sort();
    assert_eq!(
        routes,
        vec![
            ("app.p.shop".into(), "app".into(), vec![public.to_string()]),
            (
                "app.p.shop.config".into(),
                "app".into(),
                vec![config.to_string()]
            ),
        ]
    );

    // Stopped, and on error: no route at all; open connections close.
    let mut conn = EchoConn::open(live.addr(), public, &ca).await;
    for status in ["stopped", "on_error"] {
        let (st, body) = put_app(&live, "p", "shop", &rec(status)).await;
        assert_eq!(st, 200, "{body}");
        assert!(live_routes(&live).await.is_empty(), "{status}");
        for h in [public, config] {
            assert!(refused(&live, h, &ca).await, "{status}: {h} routed");
        }
        // Still registered, so GET shows why nothing routes.
        let (_, app) = admin_get(&live, "/apps/p/shop").await;
        assert_eq!(app["record"]["status"], status);
        assert_eq!(app["routes"].as_array().unwrap().len(), 0);
    }
    assert!(conn.closed_within(Duration::from_secs(5)).await);
    assert!(upload.closed_within(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_expires_like_any_route_and_is_forgotten() {
    let ca = Ca::new("enclave CA").unwrap();
    let host = "brief.apps.example.test";
    let (e, _) = enclave(&ca, &[host], "brief").await;
    let live = Live::start(&[], APPS);
    let soon = (chrono::Utc::now() + chrono::TimeDelta::seconds(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut rec = app_record(1, host, None, e.addr, "running");
    rec["expires_at"] = soon.clone().into();
    let (st, body) = put_app(&live, "p", "brief", &rec).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["app"]["expiry_rule"], "requested");
    // A stopped app has no route, and is forgotten at its expiry all the same.
    let mut stopped = app_record(2, "gone.apps.example.test", None, e.addr, "stopped");
    stopped["expires_at"] = soon.into();
    assert_eq!(put_app(&live, "p", "gone", &stopped).await.0, 200);

    let mut conn = EchoConn::open(live.addr(), host, &ca).await;
    assert!(
        conn.closed_within(Duration::from_secs(3)).await,
        "open past the app's expiry"
    );
    assert!(refused(&live, host, &ca).await);
    assert!(live_routes(&live).await.is_empty());
    for name in ["brief", "gone"] {
        let mut forgotten = false;
        for _ in 0..100 {
            if admin_get(&live, &format!("/apps/p/{name}")).await.0 == 404 {
                forgotten = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(forgotten, "{name} still registered after its expiry");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_host_while_initializing_can_be_turned_off() {
    let ca = Ca::new("enclave CA").unwrap();
    let (public, config) = ("a.apps.example.test", "a-cfg.apps.example.test");
    let (e, _) = enclave(&ca, &[public, config], "e").await;
    let live = Live::start(
        &[],
        &format!("{APPS}route_config_host_while_initializing = false\n"),
    );
    let (st, _) = put_app(
        &live,
        "p",
        "a",
        &app_record(1, public, Some(config), e.addr, "initializing"),
    )
    .await;
    assert_eq!(st, 200);
    assert!(live_routes(&live).await.is_empty());
    assert!(refused(&live, config, &ca).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_mode_terminates_and_re_encrypts_to_the_pinned_enclave() {
    // The platform's wildcard certificate, in the proxy.
    let platform_ca = Ca::new("platform CA").unwrap();
    let cert = PlatformCert::new(&platform_ca.issue(&["*.apps.example.test"]).unwrap());
    // The enclave's own certificate names its configuration hostname, as an
    // RA-TLS certificate does.
    let (public, config) = ("shop.apps.example.test", "shop-cfg.apps.example.test");
    let enclave_ca = Ca::new("enclave").unwrap();
    let leaf = enclave_ca.issue(&[config]).unwrap();
    let backend = HttpBackend::spawn(
        Some(leaf.server_config(&[b"h2", b"http/1.1"]).unwrap()),
        "enclave",
    )
    .await;
    let live = Live::start(&[], &format!("{}{APPS}", cert.toml()));

    let mut rec = app_record(1, public, Some(config), backend.addr, "running");
    rec["ssl_certificate_origin"] = "operator".into();
    // Without the pin, and without a certificate for the host: refused.
    let (st, body) = put_app(&live, "p", "shop", &rec).await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(violation_fields(&body), vec!["enclave_cert_sha256"]);
    let mut elsewhere = rec.clone();
    elsewhere["domain_name"] = "shop.other.test".into();
    elsewhere["enclave_cert_sha256"] =
        mse_proxy::apps::derive::sha256_hex(leaf.cert_der.as_ref()).into();
    let (st, body) = put_app(&live, "p", "shop", &elsewhere).await;
    assert_eq!(
        (st, violation_fields(&body)),
        (400, vec!["domain_name".to_string()]),
        "{body}"
    );

    rec["enclave_cert_sha256"] = mse_proxy::apps::derive::sha256_hex(leaf.cert_der.as_ref()).into();
    let (st, body) = put_app(&live, "p", "shop", &rec).await;
    assert_eq!(st, 200, "{body}");

    // The public hostname: the client sees the platform's certificate; the
    // proxy reaches the enclave over TLS, pinned.
    let (body, seen) = get(live.addr(), public, &platform_ca).await.unwrap();
    assert_eq!(body, "hello from enclave over HTTP/1.1");
    assert_eq!(seen, cert.leaf_der());
    assert!(
        eventually(Duration::from_secs(5), || {
            outcomes(&live.server, "app.p.shop", "terminate", "ok") == 1
        })
        .await
    );
    // The configuration hostname: passthrough, the enclave's own certificate.
    let (body, seen) = get(live.addr(), config, &enclave_ca).await.unwrap();
    assert_eq!(body, "hello from enclave over HTTP/1.1");
    assert_eq!(seen, leaf.cert_der.as_ref());

    // A redeploy whose pin no longer matches the enclave: the client's
    // handshake with the platform works, the upstream one is refused.
    let other = enclave_ca.issue(&[config]).unwrap();
    rec["enclave_cert_sha256"] =
        mse_proxy::apps::derive::sha256_hex(other.cert_der.as_ref()).into();
    let (st, body) = put_app(&live, "p", "shop", &rec).await;
    assert_eq!(st, 200, "{body}");
    let (body, _) = get(live.addr(), public, &platform_ca).await.unwrap();
    assert_eq!(body, "");
    assert!(
        eventually(Duration::from_secs(5), || {
            outcomes(
                &live.server,
                "app.p.shop",
                "terminate",
                "upstream_tls_error",
            ) == 1
        })
        .await
    );
}

/// dnsmasq arguments: the ingress, a custom domain with the right CNAME
/// (and project `p`'s ownership proof: tests/dns.rs tests the proof), one
/// with a CNAME elsewhere; other names under `.test` do not exist.
fn dns_records(shop_target: &str) -> Vec<String> {
    vec![
        "--local=/test/".into(),
        "--host-record=proxy.mse.example.test,127.0.0.1".into(),
        "--host-record=elsewhere.test,127.0.0.2".into(),
        format!("--cname=shop.customer.test,{shop_target}"),
        "--cname=wrong.customer.test,elsewhere.test".into(),
        format!(
            "--txt-record=_mse-challenge.shop.customer.test,{}",
            mse_proxy::apps::ownership::txt_value("p")
        ),
    ]
}

async fn dnsmasq(shop_target: &str) -> Dnsmasq {
    let args = dns_records(shop_target);
    Dnsmasq::start(&args.iter().map(String::as_str).collect::<Vec<_>>()).await
}

fn cname_config(dns: &Dnsmasq, extra: &str) -> String {
    format!(
        "[dns]\nnameservers = [\"{}\"]\n{APPS}ingress_hostname = \"proxy.mse.example.test\"\ncname_policy = \"enforce\"\n{extra}",
        dns.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_domain_is_accepted_with_its_cname_and_refused_without() {
    let dns = dnsmasq("proxy.mse.example.test").await;
    let ca = Ca::new("owner CA").unwrap();
    let (e, _) = enclave(&ca, &["shop.customer.test", "wrong.customer.test"], "shop").await;
    let live = Live::start(&[], &cname_config(&dns, ""));

    let (st, body) = put_app(
        &live,
        "p",
        "shop",
        &app_record(1, "shop.customer.test", None, e.addr, "running"),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["app"]["cname"]["shop.customer.test"]["state"], "ok");
    assert_eq!(
        get(live.addr(), "shop.customer.test", &ca).await.unwrap().0,
        "hello from shop"
    );

    for (name, host, why) in [
        ("wrong", "wrong.customer.test", "ends at `elsewhere.test`"),
        ("none", "none.customer.test", "has no CNAME record"),
    ] {
        let (st, body) = put_app(
            &live,
            "p",
            name,
            &app_record(2, host, None, e.addr, "running"),
        )
        .await;
        assert_eq!(st, 400, "{body}");
        assert_eq!(violation_fields(&body), vec!["domain_name"]);
        let msg = body["violations"][0]["message"].as_str().unwrap();
        assert!(
            msg.contains("proxy.mse.example.test") && msg.contains(why),
            "{msg}"
        );
        assert!(refused(&live, host, &ca).await);
    }
    // The platform's own names need no CNAME.
    let (st, body) = put_app(
        &live,
        "p",
        "plain",
        &app_record(3, "x.apps.example.test", None, e.addr, "running"),
    )
    .await;
    assert_eq!(st, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cname_recheck_withdraws_a_custom_domain_and_restores_it() {
    let dns = dnsmasq("proxy.mse.example.test").await;
    let ca = Ca::new("owner CA").unwrap();
    let (e, _) = enclave(
        &ca,
        &["shop.customer.test", "shop-cfg.apps.example.test"],
        "shop",
    )
    .await;
    let live = Live::start(&[], &cname_config(&dns, "cname_recheck = \"100ms\"\n"));
    let rec = app_record(
        1,
        "shop.customer.test",
        Some("shop-cfg.apps.example.test"),
        e.addr,
        "running",
    );
    let (st, body) = put_app(&live, "p", "shop", &rec).await;
    assert_eq!(st, 200, "{body}");
    let mut conn = EchoConn::open(live.addr(), "shop.customer.test", &ca).await;

    // The customer points the name elsewhere: the custom route goes, the
    // platform-named configuration route stays.
    let args = dns_records("elsewhere.test");
    let dns = dns
        .restart(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    assert!(
        conn.closed_within(Duration::from_secs(10)).await,
        "custom domain not withdrawn"
    );
    let names: Vec<String> = live_routes(&live).await.into_iter().map(|r| r.0).collect();
    assert_eq!(names, vec!["app.p.shop.config"]);
    assert!(refused(&live, "shop.customer.test", &ca).await);
    let (_, app) = admin_get(&live, "/apps/p/shop").await;
    assert_eq!(
        app["cname"]["shop.customer.test"]["state"], "wrong",
        "{app}"
    );

    // And back.
    let args = dns_records("proxy.mse.example.test");
    let _dns = dns
        .restart(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let mut back = false;
    for _ in 0..100 {
        if live_routes(&live).await.len() == 2 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "custom domain not restored");
    assert_eq!(
        get(live.addr(), "shop.customer.test", &ca).await.unwrap().0,
        "hello from shop"
    );
}

#[tokio::test]
async fn bad_records_list_every_violation_and_writes_need_the_token() {
    let live = Live::start(&[], APPS);
    let node = closed_port().await;
    let mut rec = app_record(1, "*.apps.example.test", Some("bad name"), node, "running");
    rec["hardware"] = "".into();
    rec["node"] = "nowhere".into();
    rec["expires_at"] = "2001-01-01T00:00:00Z".into();
    rec["enclave_cert_sha256"] = "ab".into();
    let (st, body) = put_app(&live, "p", "shop", &rec).await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(
        violation_fields(&body),
        vec![
            "domain_name",
            "config_domain_name",
            "hardware",
            "node",
            "enclave_cert_sha256",
            "expires_at"
        ],
        "{body}"
    );
    // Type errors name their field too.
    let mut rec = app_record(1, "a.apps.example.test", None, node, "running");
    rec["status"] = "asleep".into();
    let (st, body) = put_app(&live, "p", "shop", &rec).await;
    assert_eq!(
        (st, violation_fields(&body)),
        (400, vec!["status".to_string()]),
        "{body}"
    );
    // Free hardware asking for a year gets 4 hours.
    let mut rec = app_record(1, "a.apps.example.test", None, node, "running");
    rec["hardware"] = "4g-eu-001".into();
    rec["expires_at"] = "2099-01-01T00:00:00Z".into();
    let (st, body) = put_app(&live, "p", "shop", &rec).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["app"]["expiry_rule"], "free_hardware");
    let expires =
        chrono::DateTime::parse_from_rfc3339(body["app"]["expires_at"].as_str().unwrap()).unwrap();
    let left = expires.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(
        left <= chrono::TimeDelta::hours(4) && left > chrono::TimeDelta::minutes(239),
        "{left}"
    );

    let resp = reqwest::Client::new()
        .put(live.admin("/apps/p/shop"))
        .json(&rec)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = reqwest::Client::new()
        .delete(live.admin("/apps/p/shop"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "a read token may not write");
}

// ---- mse-proxy app plan, the real binary ----

fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/apps")
        .join(p)
}

/// Runs `mse-proxy app plan ARGS` with `env`; exit code, stdout, stderr.
fn plan(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mse-proxy"))
        .args(["app", "plan"])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run mse-proxy");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The fields named in `FILE: FIELD: message` lines.
fn fields(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(str::to_string))
        .filter(|f| !f.ends_with("problem(s)"))
        .collect()
}

const NODE: &str = "10.0.0.7:443";

#[test]
fn app_plan_on_the_documented_example() {
    let cfg = data("example/mse.toml");
    let (code, out, err) = plan(
        &[
            "--app-config",
            cfg.to_str().unwrap(),
            "--node",
            NODE,
            "--now",
            "2030-01-01T00:00:00Z",
            "--app-domain",
            "apps.example.test",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let p: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(p["project"], "my_project");
    assert_eq!(p["name"], "test");
    // Free hardware: 4 hours after deployment.
    assert_eq!(p["expires_at"], "2030-01-01T04:00:00Z");
    assert_eq!(p["expiry_rule"], "free_hardware");
    assert_eq!(p["record"]["ssl_certificate_origin"], "self");
    assert_eq!(p["record"]["deployed_at"], "2030-01-01T00:00:00Z");
    assert_eq!(p["record"]["node"], NODE);
    let domain = p["record"]["domain_name"].as_str().unwrap();
    let (label, rest) = domain.split_once('.').unwrap();
    assert_eq!(rest, "apps.example.test");
    assert!(
        label.len() == 12 && label.bytes().all(|b| b.is_ascii_hexdigit()),
        "{domain}"
    );
    let routes = p["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0]["name"], "app.my_project.test");
    assert_eq!(routes[0]["mode"], "passthrough");
    assert_eq!(routes[0]["hosts"][0], domain);
    assert_eq!(routes[0]["backends"][0], NODE);
    assert_eq!(routes[0]["expires_at"], "2030-01-01T04:00:00Z");

    // The [cloud] example of the docs, with its secrets file and its
    // expiration date (a zone written `+00:00` after a space).
    let cfg = data("example-cloud/mse.toml");
    let args = |now: &'static str| {
        vec![
            "--app-config".to_string(),
            cfg.display().to_string(),
            "--node".into(),
            NODE.into(),
            "--now".into(),
            now.into(),
            "--app-domain".into(),
            "apps.example.test".into(),
        ]
    };
    let a = args("2023-06-28T22:00:00Z");
    let (code, out, err) = plan(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(code, 0, "{err}");
    let p: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(p["project"], "default");
    // It asks for 2 hours: less than the free 4, so it gets them.
    assert_eq!(p["expires_at"], "2023-06-29T00:00:00Z");
    assert_eq!(p["expiry_rule"], "requested");
    // A year later the date is in the past.
    let a = args("2024-06-28T00:00:00Z");
    let (code, _, err) = plan(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(fields(&err), vec!["cloud.expiration_date"], "{err}");
}

/// A minimal valid app dir in `dir`, its mse.toml made of `main` and
/// `cloud` (the rest of the `[cloud]` body, which may set its own `docker`)
/// and `extra` (more tables).
fn app_dir(dir: &Path, main: &str, cloud: &str, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("code")).unwrap();
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    let docker = if cloud.contains("docker =") {
        ""
    } else {
        "docker = \"ghcr.io/cosmian/mse-flask:20230710125733\"\n"
    };
    let text = format!(
        "name = \"shop\"\n{main}tests_cmd = \"pytest\"\ntests_requirements = []\n\
         [cloud]\ncode = \"code\"\ntests = \"tests\"\n{docker}project = \"p\"\n{cloud}{extra}"
    );
    let path = dir.join("mse.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const MAIN: &str = "python_application = \"app:app\"\nhealthcheck_endpoint = \"/\"\n";

/// An owner certificate (self-signed: the proxy reads only its names and
/// notAfter) for `names`, valid until the start of `year`.
fn owner_cert(dir: &Path, names: &[&str], year: i32) {
    let mut p =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    p.not_after = rcgen::date_time_ymd(year, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.join("cert.pem"), p.self_signed(&key).unwrap().pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
}

const SSL: &str = "[cloud.ssl]\ndomain_name = \"shop.owner.test\"\nprivate_key = \"key.pem\"\ncertificate = \"cert.pem\"\n";

/// `app plan` on `cfg` at a fixed now, with `more` options (`--node NODE`
/// unless they name their own).
fn plan_in(cfg: &Path, more: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut args = vec![
        "--app-config",
        cfg.to_str().unwrap(),
        "--now",
        "2030-01-01T00:00:00Z",
        "--app-domain",
        "apps.example.test",
    ];
    if !more.contains(&"--node") {
        args.extend(["--node", NODE]);
    }
    args.extend_from_slice(more);
    plan(&args, env)
}

#[test]
fn app_plan_with_an_owner_certificate() {
    let dir = tempfile::tempdir().unwrap();
    owner_cert(dir.path(), &["*.owner.test"], 2031);
    let cfg = app_dir(dir.path(), MAIN, "hardware = \"2g-eu-001\"\n", SSL);
    let (code, out, err) = plan_in(&cfg, &[], &[]);
    assert_eq!(code, 0, "{err}");
    let p: Value = serde_json::from_str(&out).unwrap();
    // No date asked: the certificate's notAfter.
    assert_eq!(p["expires_at"], "2031-01-01T00:00:00Z");
    assert_eq!(p["expiry_rule"], "owner_certificate");
    assert_eq!(p["record"]["ssl_certificate_origin"], "owner");
    assert_eq!(p["record"]["domain_name"], "shop.owner.test");
    // The custom domain's ownership proof, as a tenant publishes it.
    assert_eq!(
        p["ownership_proof"],
        serde_json::json!({
            "domain": "shop.owner.test",
            "txt_name": "_mse-challenge.shop.owner.test",
            "txt_value": mse_proxy::apps::ownership::txt_value("p"),
        })
    );
    let routes: Vec<(String, String)> = p["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().into(),
                r["hosts"][0].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        routes[1],
        ("app.p.shop".to_string(), "shop.owner.test".to_string())
    );
    assert_eq!(routes[0].0, "app.p.shop.config");
    assert!(routes[0].1.ends_with(".apps.example.test"));
    assert!(p["routes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["mode"] == "passthrough"));
}

/// One broken `mse.toml` (or command line) and the fields it must name.
struct Broken {
    what: &'static str,
    main: &'static str,
    cloud: &'static str,
    extra: &'static str,
    args: &'static [&'static str],
    fields: &'static [&'static str],
}

#[test]
fn app_plan_reports_every_violation_with_its_field() {
    let cases = [
        Broken {
            what: "main section",
            main: "python_application = \"app\"\nhealthcheck_endpoint = \"health\"\n",
            cloud: "hardware = \"a-hardware-name-too-long\"\n",
            extra: "",
            args: &[],
            fields: &["python_application", "healthcheck_endpoint", "cloud.hardware"],
        },
        Broken {
            what: "past expiration date",
            main: MAIN,
            cloud: "hardware = \"2g-eu-001\"\nexpiration_date = \"2029-12-31T00:00:00Z\"\n",
            extra: "",
            args: &[],
            fields: &["cloud.expiration_date"],
        },
        Broken {
            what: "certificate for another name",
            main: MAIN,
            cloud: "hardware = \"2g-eu-001\"\n",
            extra: "[cloud.ssl]\ndomain_name = \"shop.other.test\"\nprivate_key = \"key.pem\"\ncertificate = \"cert.pem\"\n",
            args: &[],
            fields: &["cloud.ssl.certificate"],
        },
        Broken {
            what: "expiry past the certificate",
            main: MAIN,
            cloud: "hardware = \"2g-eu-001\"\nexpiration_date = \"2032-01-01T00:00:00Z\"\n",
            extra: SSL,
            args: &[],
            fields: &["cloud.expiration_date"],
        },
        Broken {
            what: "missing key and secrets",
            main: MAIN,
            cloud: "hardware = \"2g-eu-001\"\nsecrets = \"nope.json\"\n",
            extra: "[cloud.ssl]\ndomain_name = \"shop.owner.test\"\nprivate_key = \"nokey.pem\"\ncertificate = \"cert.pem\"\n",
            args: &[],
            fields: &["cloud.secrets", "cloud.ssl.private_key"],
        },
        Broken {
            what: "local docker image",
            main: MAIN,
            cloud: "hardware = \"2g-eu-001\"\ndocker = \"mse-flask:1\"\n",
            extra: "",
            args: &[],
            fields: &["cloud.docker"],
        },
        Broken {
            what: "bad options",
            main: MAIN,
            cloud: "hardware = \"2g-eu-001\"\n",
            extra: "",
            args: &["--node", "nowhere", "--origin", "operator"],
            fields: &["--node", "--enclave-cert-sha256"],
        },
        Broken {
            what: "unknown key",
            main: MAIN,
            cloud: "hardware = \"2g-eu-001\"\nregion = \"eu\"\n",
            extra: "",
            args: &[],
            fields: &["line 12"],
        },
    ];
    for c in cases {
        let dir = tempfile::tempdir().unwrap();
        owner_cert(dir.path(), &["*.owner.test"], 2031);
        let cfg = app_dir(dir.path(), c.main, c.cloud, c.extra);
        let (code, out, err) = plan_in(&cfg, c.args, &[]);
        assert_eq!(code, 3, "{}: {out}{err}", c.what);
        assert_eq!(fields(&err), c.fields.to_vec(), "{}:\n{err}", c.what);
        assert!(
            out.is_empty(),
            "{}: printed a plan despite violations",
            c.what
        );
    }
}

#[test]
fn app_plan_takes_a_date_without_a_zone_in_local_time() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = app_dir(
        dir.path(),
        MAIN,
        "hardware = \"2g-eu-001\"\nexpiration_date = \"2030-06-29 00:00:00\"\n",
        "",
    );
    // POSIX TZ: "XXX-2" is two hours east of UTC.
    for (tz, want) in [
        ("UTC", "2030-06-29T00:00:00Z"),
        ("XXX-2", "2030-06-28T22:00:00Z"),
    ] {
        let (code, out, err) = plan_in(&cfg, &[], &[("TZ", tz)]);
        assert_eq!(code, 0, "{err}");
        let p: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(p["expires_at"], want, "TZ={tz}");
        assert_eq!(p["record"]["expires_at"], want, "TZ={tz}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_plan_apply_registers_the_app_and_a_redeploy_keeps_its_hostname() {
    let ca = Ca::new("enclave CA").unwrap();
    let live = Live::start(&[], APPS);
    let token = live.dir.path().join("token");
    let admin = format!("http://{}", live.server.admin_addr.unwrap());
    let cfg = data("example/mse.toml");
    let apply = |node: String| {
        let (cfg, admin, token) = (cfg.clone(), admin.clone(), token.clone());
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mse-proxy"))
                .args(["app", "plan", "--app-config"])
                .arg(&cfg)
                .args([
                    "--node",
                    &node,
                    "--app-domain",
                    "apps.example.test",
                    "--apply",
                    &admin,
                    "--token-file",
                ])
                .arg(&token)
                .output()
                .await
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "{err}");
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        }
    };
    let first = apply(closed_port().await.to_string()).await;
    let domain = first["record"]["domain_name"].as_str().unwrap().to_string();
    let (st, app) = admin_get(&live, "/apps/my_project/test").await;
    assert_eq!(st, 200);
    assert_eq!(app["record"]["domain_name"], domain.as_str());

    // A redeploy to a live enclave: a new id, the same hostname.
    let (e, _) = enclave(&ca, &[&domain], "redeployed").await;
    let second = apply(e.addr.to_string()).await;
    assert_eq!(second["record"]["domain_name"], domain.as_str());
    assert_ne!(second["record"]["id"], first["record"]["id"]);
    assert_eq!(
        get(live.addr(), &domain, &ca).await.unwrap().0,
        "hello from redeployed"
    );
}
