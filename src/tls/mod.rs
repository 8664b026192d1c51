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

/// The cipher suite preference of the configs this proxy builds: AES-128-GCM
/// first, or ChaCha20-Poly1305 first for a client that lists it before any
/// AES-GCM suite (a client without AES instructions does so; [`provider`]'s
/// order, rustls's default, puts AES-256-GCM first).
///
/// Why AES-128 first: a TLS 1.3 AES-256-GCM suite comes with SHA-384, which
/// has no instructions on x86 (SHA-256 has), and its key schedule and
/// transcript hashing were 15 % of a terminated connection's CPU in the load
/// bench's profile; AES-128-GCM also encrypts with 10 rounds instead of 14.
/// Both are TLS 1.3 suites of the same standing (128-bit security is what
/// X25519 and P-256 give anyway). Browsers list AES-128-GCM first too; this
/// order applies it to clients (curl, OpenSSL, rustls) that list AES-256
/// first. ChaCha first for a client that asks for it, as Go and BoringSSL
/// do: without AES instructions it is the faster one on the client's side.
pub fn ordered_provider(chacha_first: bool) -> &'static Arc<CryptoProvider> {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    fn build(chacha_first: bool) -> Arc<CryptoProvider> {
        let mut suites = vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ];
        if chacha_first {
            // Each ChaCha suite before the AES ones of its version and key type.
            for block in suites.chunks_mut(3) {
                block.rotate_right(1);
            }
        }
        Arc::new(CryptoProvider {
            cipher_suites: suites,
            ..CryptoProvider::clone(provider())
        })
    }
    static AES: LazyLock<Arc<CryptoProvider>> = LazyLock::new(|| build(false));
    static CHACHA: LazyLock<Arc<CryptoProvider>> = LazyLock::new(|| build(true));
    if chacha_first {
        &CHACHA
    } else {
        &AES
    }
}

/// Makes [`provider`] the process's default: reqwest (`app plan --apply`,
/// the tests' clients) builds its rustls config from the process default
/// whatever the URL, and panics without one. Idempotent.
pub fn install_default_provider() {
    let _ = CryptoProvider::install_default(CryptoProvider::clone(provider()));
}
