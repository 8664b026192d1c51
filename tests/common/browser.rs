//! A real browser: headless Chromium (Debian package `chromium`), loading a
//! page through the proxy with no DNS (the host is mapped to loopback) and
//! trusting only the proxy's certificate, by the SHA-256 of its public key.

use std::net::SocketAddr;

use base64::Engine;

use mse_proxy::standin::Leaf;

/// `base64(sha256(SubjectPublicKeyInfo))` of `leaf`, the form Chromium's
/// `--ignore-certificate-errors-spki-list` takes.
pub fn spki_hash(leaf: &Leaf) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.cert_der.as_ref()).unwrap();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.public_key().raw);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// `chromium --headless --dump-dom https://HOST:PORT/` through the proxy at
/// `proxy`: success and what it printed (the page's DOM, then its log).
/// Fails, never skips, when Chromium is not installed.
pub async fn dump_dom(proxy: SocketAddr, host: &str, spki: &str) -> (bool, String) {
    let profile = tempfile::tempdir().unwrap();
    let args = [
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-dev-shm-usage".into(),
        format!("--user-data-dir={}", profile.path().display()),
        format!("--host-resolver-rules=MAP {host} {}", proxy.ip()),
        format!("--ignore-certificate-errors-spki-list={spki}"),
        "--dump-dom".into(),
        format!("https://{host}:{}/", proxy.port()),
    ];
    super::run_tool("chromium", &args, true).await
}

/// The installed Chromium's version line, for the test's log.
pub async fn version() -> String {
    super::run_tool("chromium", &["--version".to_string()], true)
        .await
        .1
}
