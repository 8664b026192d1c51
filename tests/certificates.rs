//! The platform's certificates as an operator watches them: the expiry
//! gauge shows the served certificate's notAfter, and app owners'
//! certificates by app.

mod common;

use common::*;
use x509_parser::prelude::{FromDer, X509Certificate};

const APPS: &str = "*.apps.example.test";
const HOST: &str = "echo.apps.example.test";

fn not_after(der: &[u8]) -> f64 {
    let (_, c) = X509Certificate::from_der(der).expect("a certificate");
    c.validity().not_after.timestamp() as f64
}

/// The certificate a new handshake gets, if one completes.
async fn served(live: &Live, ca: &Ca) -> Option<Vec<u8>> {
    let tls = tls_connect(live.addr(), HOST, ca).await.ok()?;
    let cert = tls.get_ref().1.peer_certificates()?.first()?;
    Some(cert.as_ref().to_vec())
}

/// An owner certificate for `host`, valid until June of `year`.
fn owner_pem(host: &str, year: i32) -> String {
    let ca = Ca::new("owner CA").unwrap();
    ca.issue_until(&[host], Some((year, 6, 1)))
        .unwrap()
        .cert_pem
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expiry_gauge_shows_the_served_and_app_owner_certificates() {
    let ca = Ca::new("platform CA").unwrap();
    let cert = PlatformCert::new(&ca.issue_until(&[APPS], Some((2031, 1, 2))).unwrap());
    let enclave_ca = Ca::new("enclave CA").unwrap();
    let (e, leaf) = enclave(&enclave_ca, &["enclave.internal"], "echo").await;
    let live = Live::start(
        &[terminate_spec("echo", &[HOST], &[e.addr], pinned(&leaf))],
        &format!(
            "[apps]\nplatform_domains = [\"apps.example.test\"]\n{}",
            cert.toml_named("wildcard")
        ),
    );
    let platform =
        "mse_proxy_certificate_expiry_timestamp_seconds{app=\"\",certificate=\"wildcard\"}";
    let seen = served(&live, &ca).await.expect("handshake");
    let text = scrape(&live).await;
    assert_eq!(sample(&text, platform), Some(not_after(&seen)), "{text}");

    // An app-owner-trust app: its owner certificate shows by app.
    let shop = "shop.apps.example.test";
    let mut rec = app_record(1, shop, None, e.addr, "running");
    rec["ssl_certificate_origin"] = "owner".into();
    rec["owner_certificate"] = owner_pem(shop, 2030).into();
    let (st, body) = put_app(&live, "p", "shop", &rec).await;
    assert_eq!(st, 200, "{body}");
    let owner = "mse_proxy_certificate_expiry_timestamp_seconds{app=\"p/shop\",certificate=\"\"}";
    let text = scrape(&live).await;
    let june_2030 = chrono::DateTime::parse_from_rfc3339("2030-06-01T00:00:00Z").unwrap();
    assert_eq!(
        sample(&text, owner),
        Some(june_2030.timestamp() as f64),
        "{text}"
    );
    promtool_accepts(&text).await;

    assert_eq!(delete_app(&live, "p", "shop").await, 200);
    let text = scrape(&live).await;
    assert!(!text.contains("app=\"p/shop\""), "{text}");
    assert!(sample(&text, platform).is_some());
}
