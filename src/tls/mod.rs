//! TLS-level pieces of the ingress: reading what a client sends before any
//! handshake (`client_hello`, `detect`, `alert`), and terminating TLS for
//! terminate routes (`certs`, read through `pem_file`; `terminate`; which
//! protocol a client gets: `alpn`, and never h2 on a certificate other
//! tenants share: `coalescing`) with a new TLS connection to the enclave
//! (`upstream`, `verify`); both TLS ends are `stream`s, whose ciphertext
//! buffers (`record_buf`) exist only while they hold bytes.
pub mod alert;
pub mod alpn;
pub mod certs;
pub mod client_hello;
pub mod coalescing;
pub mod detect;
pub mod pem_file;
pub mod record_buf;
pub mod stream;
pub mod terminate;
pub mod upstream;
pub mod validity;
pub mod verify;

use std::sync::{Arc, LazyLock};

use rustls::crypto::CryptoProvider;

/// The crypto provider every TLS config here uses (aws-lc-rs, as rustls's
/// own default): loading keys and verifying signatures go through it too.
pub fn provider() -> &'static Arc<CryptoProvider> {
    static PROVIDER: LazyLock<Arc<CryptoProvider>> =
        LazyLock::new(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    &PROVIDER
}

/// Makes [`provider`] the process's default: reqwest (`app plan --apply`,
/// the tests' clients) builds its rustls config from the process default
/// whatever the URL, and panics without one. Idempotent.
pub fn install_default_provider() {
    let _ = CryptoProvider::install_default(CryptoProvider::clone(provider()));
}
