//! The platform's certificates as an operator renews and watches them. A
//! renewal on disk needs no signal: one renamed over the files, written in
//! place or swapped in by a symlink is served while connections opened
//! before it keep working; a broken one is refused (the old certificate
//! stays, the error is counted) and a good one after it taken. The expiry
//! gauge shows the served certificate's notAfter, and app owners'
//! certificates by app.

mod common;

use std::time::Duration;

use common::*;
use mse_proxy::standin::Leaf;
use x509_parser::prelude::{FromDer, X509Certificate};

const APPS: &str = "*.apps.example.test";
const HOST: &str = "echo.apps.example.test";
/// Generous bounds: a renewal is served within the debounce (20 ms here), a
/// broken one refused about 2 s after its files went quiet.
const BOUND: Duration = Duration::from_secs(20);

/// A platform CA, its first certificate laid out on disk as `make` does,
/// and a proxy serving it on a terminate route to an echoing enclave.
async fn serving(make: impl Fn(&Leaf) -> PlatformCert) -> (Ca, Leaf, PlatformCert, Live, Enclave) {
    let ca = Ca::new("platform CA").unwrap();
    let first = ca.issue(&[APPS]).unwrap();
    let cert = make(&first);
    let enclave_ca = Ca::new("enclave CA").unwrap();
    let (e, leaf) = enclave(&enclave_ca, &["enclave.internal"], "echo").await;
    let live = Live::start(
        &[terminate_spec("echo", &[HOST], &[e.addr], pinned(&leaf))],
        &cert.toml(),
    );
    (ca, first, cert, live, e)
}

fn serial(der: &[u8]) -> Vec<u8> {
    let (_, c) = X509Certificate::from_der(der).expect("a certificate");
    c.raw_serial().to_vec()
}

fn not_after(der: &[u8]) -> f64 {
    let (_, c) = X509Certificate::from_der(der).expect("a certificate");
    c.validity().not_after.timestamp() as f64
}

fn peer_cert(c: &EchoConn) -> Vec<u8> {
    c.0.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

/// The certificate a new handshake gets, if one completes.
async fn served(live: &Live, ca: &Ca) -> Option<Vec<u8>> {
    let tls = tls_connect(live.addr(), HOST, ca).await.ok()?;
    let cert = tls.get_ref().1.peer_certificates()?.first()?;
    Some(cert.as_ref().to_vec())
}

/// Waits until new handshakes get `leaf`.
async fn serves(live: &Live, ca: &Ca, leaf: &Leaf) -> bool {
    let want = serial(leaf.cert_der.as_ref());
    eventually_async(BOUND, || async {
        served(live, ca).await.map(|d| serial(&d)) == Some(want.clone())
    })
    .await
}

/// `certificate_reloads_total` of the certificate named `name`.
fn reloads(live: &Live, name: &str, result: &str) -> u64 {
    live.server
        .shared
        .metrics
        .certificate_reloads
        .with_label_values(&[name, result])
        .get()
}

/// Laid out by `make` and renewed by `renew`: new handshakes get the new
/// certificate, the connection opened before it keeps relaying (with the
/// old one), and exactly one renewal was counted, no error.
async fn renewal_is_served(
    make: impl Fn(&Leaf) -> PlatformCert,
    renew: impl Fn(&PlatformCert, &Leaf),
) {
    let (ca, first, cert, live, _enclave) = serving(make).await;
    let name = cert
        .cert
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut open = EchoConn::open(live.addr(), HOST, &ca).await;
    assert_eq!(serial(&peer_cert(&open)), serial(first.cert_der.as_ref()));

    let renewed = ca.issue(&[APPS]).unwrap();
    assert_ne!(
        serial(renewed.cert_der.as_ref()),
        serial(first.cert_der.as_ref())
    );
    renew(&cert, &renewed);
    assert!(serves(&live, &ca, &renewed).await, "renewal not served");
    assert!(open.ping("after the renewal").await, "open connection lost");
    assert_eq!(serial(&peer_cert(&open)), serial(first.cert_der.as_ref()));
    assert_eq!(reloads(&live, &name, "ok"), 1);
    assert_eq!(reloads(&live, &name, "error"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_renamed_over_the_files_is_served_and_open_connections_stay() {
    renewal_is_served(PlatformCert::new, PlatformCert::replace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_written_in_place_is_served_and_open_connections_stay() {
    renewal_is_served(PlatformCert::new, PlatformCert::replace_in_place).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_swapped_in_by_a_symlink_is_served() {
    // Only `..data` changes; the files the config names stay symlinks.
    renewal_is_served(PlatformCert::symlinked, PlatformCert::swap_version).await;
}

/// A certificate that lands well after the debounce but before its key is
/// not a failure: the pair is read again when the key lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_written_before_its_key_waits_for_it() {
    let (ca, first, cert, live, _enclave) = serving(PlatformCert::new).await;
    let renewed = ca.issue(&[APPS]).unwrap();
    std::fs::write(&cert.cert, &renewed.cert_pem).unwrap();
    // Ten debounces (not a timing assertion: a gap for the watch to see
    // the half-renewed pair, which it must neither serve nor refuse).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let now = served(&live, &ca).await.expect("handshake");
    assert_eq!(serial(&now), serial(first.cert_der.as_ref()));
    std::fs::write(&cert.key, &renewed.key_pem).unwrap();
    assert!(serves(&live, &ca, &renewed).await, "renewal not served");
    assert_eq!(reloads(&live, "platform.crt", "ok"), 1);
    assert_eq!(reloads(&live, "platform.crt", "error"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_renewal_is_refused_and_counted_and_a_good_one_after_it_is_taken() {
    let (ca, first, cert, live, _enclave) = serving(PlatformCert::new).await;
    let mut open = EchoConn::open(live.addr(), HOST, &ca).await;
    let errors = |n| {
        let live = &live;
        eventually(BOUND, move || reloads(live, "platform.crt", "error") == n)
    };

    // A new certificate with a key that is not its own.
    let renewed = ca.issue(&[APPS]).unwrap();
    let stranger = ca.issue(&[APPS]).unwrap();
    cert.replace(&Leaf {
        key_pem: stranger.key_pem.clone(),
        ..renewed.clone()
    });
    assert!(errors(1).await, "mismatched key not counted");
    // Garbage in place of the certificate.
    std::fs::write(&cert.cert, "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    assert!(errors(2).await, "garbage not counted");
    // A FIFO renamed over it: refused, and nothing blocks on it.
    let fifo = cert.dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    std::fs::rename(&fifo, &cert.cert).unwrap();
    assert!(errors(3).await, "FIFO not counted");
    // Missing.
    std::fs::remove_file(&cert.cert).unwrap();
    assert!(errors(4).await, "missing file not counted");

    let now = served(&live, &ca)
        .await
        .expect("the old certificate serves");
    assert_eq!(serial(&now), serial(first.cert_der.as_ref()));
    assert!(open.ping("after refused renewals").await);
    assert_eq!(reloads(&live, "platform.crt", "ok"), 0);

    cert.replace(&renewed);
    assert!(serves(&live, &ca, &renewed).await, "good renewal not taken");
    assert_eq!(reloads(&live, "platform.crt", "ok"), 1);
    assert_eq!(reloads(&live, "platform.crt", "error"), 4);
    assert!(open.ping("after the renewal").await);
}

/// An owner certificate for `host`, valid until June of `year`.
fn owner_pem(host: &str, year: i32) -> String {
    let ca = Ca::new("owner CA").unwrap();
    ca.issue_until(&[host], Some((year, 6, 1)))
        .unwrap()
        .cert_pem
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expiry_gauge_follows_renewals_and_shows_app_owner_certificates() {
    let ca = Ca::new("platform CA").unwrap();
    let first = ca.issue_until(&[APPS], Some((2031, 1, 2))).unwrap();
    let cert = PlatformCert::new(&first);
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
    let text = live.scrape().await;
    assert_eq!(sample(&text, platform), Some(not_after(&seen)), "{text}");
    assert_eq!(
        sample(
            &text,
            "mse_proxy_certificate_reloads_total{certificate=\"wildcard\",result=\"error\"}"
        ),
        Some(0.0),
        "{text}"
    );

    let renewed = ca.issue_until(&[APPS], Some((2032, 3, 4))).unwrap();
    cert.replace(&renewed);
    assert!(serves(&live, &ca, &renewed).await);
    let seen = served(&live, &ca).await.expect("handshake");
    let text = live.scrape().await;
    assert_eq!(sample(&text, platform), Some(not_after(&seen)), "{text}");
    assert_ne!(not_after(&seen), not_after(first.cert_der.as_ref()));

    // An app-owner-trust app: its owner certificate shows by app.
    let shop = "shop.apps.example.test";
    let mut rec = app_record(1, shop, None, e.addr, "running");
    rec["ssl_certificate_origin"] = "owner".into();
    rec["owner_certificate"] = owner_pem(shop, 2030).into();
    let (st, body) = put_app(&live, "p", "shop", &rec).await;
    assert_eq!(st, 200, "{body}");
    let owner = "mse_proxy_certificate_expiry_timestamp_seconds{app=\"p/shop\",certificate=\"\"}";
    let text = live.scrape().await;
    let june_2030 = chrono::DateTime::parse_from_rfc3339("2030-06-01T00:00:00Z").unwrap();
    assert_eq!(
        sample(&text, owner),
        Some(june_2030.timestamp() as f64),
        "{text}"
    );
    promtool_accepts(&text).await;

    assert_eq!(delete_app(&live, "p", "shop").await, 200);
    let text = live.scrape().await;
    assert!(!text.contains("app=\"p/shop\""), "{text}");
    assert!(sample(&text, platform).is_some());
}
