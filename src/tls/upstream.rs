//! How a terminate route reaches its enclave: plain TCP, or TLS verified in
//! one of three explicit ways. The rustls client config is built once, when
//! the route is loaded; a connection only chooses the ALPN it offers (the one
//! protocol negotiated with its client).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use super::verify::KeyVerifier;

/// How the backend's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// A chain to one of these roots, valid for the upstream server name.
    CaFile {
        path: PathBuf,
        roots: Vec<CertificateDer<'static>>,
    },
    /// The SHA-256 of the backend's end-entity certificate.
    Pin([u8; 32]),
    /// Not at all (`insecure_skip_verify = true`).
    Insecure,
}

/// A TLS upstream: how it is verified, the name sent to it, and the client
/// config built from those.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    pub verify: Verify,
    /// The SNI (and, with a CA, the name verified); `None`: the client's SNI.
    pub sni: Option<ServerName<'static>>,
    client: Arc<ClientConfig>,
}

/// Two upstreams are the same when their settings are: the config is only
/// derived from them, so a reload that leaves them alone leaves the route
/// (and its connections) alone.
impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.verify == other.verify && self.sni == other.sni
    }
}

impl Eq for UpstreamTls {}

impl UpstreamTls {
    /// Builds the client config for these settings.
    pub fn new(verify: Verify, sni: Option<ServerName<'static>>) -> Result<Self, String> {
        // AES-128-GCM offered first: cheaper for both ends (see
        // `ordered_provider`), and the backend, an enclave on a server CPU,
        // has AES instructions.
        let builder =
            ClientConfig::builder_with_provider(Arc::clone(super::ordered_provider(false)))
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("no TLS version for the cipher suites: {e}"))?;
        let client = match &verify {
            Verify::CaFile { roots, .. } => {
                let mut store = RootCertStore::empty();
                for r in roots {
                    store
                        .add(r.clone())
                        .map_err(|e| format!("not a usable CA certificate: {e}"))?;
                }
                builder.with_root_certificates(store).with_no_client_auth()
            }
            Verify::Pin(pin) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(KeyVerifier::pinned(*pin)))
                .with_no_client_auth(),
            Verify::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(KeyVerifier::skip()))
                .with_no_client_auth(),
        };
        Ok(Self {
            verify,
            sni,
            client: Arc::new(client),
        })
    }

    /// The shared client config (session resumption to the backend on).
    pub fn client_config(&self) -> &Arc<ClientConfig> {
        &self.client
    }
}

/// Where the decrypted bytes of a terminate route go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// Plain TCP: the enclave side is not encrypted.
    Plain,
    /// A new TLS connection to the enclave.
    Tls(UpstreamTls),
}

impl Upstream {
    /// Whether the backend's certificate goes unchecked, which is worth a
    /// warning whenever such a route is loaded.
    pub fn is_insecure(&self) -> bool {
        matches!(self, Upstream::Tls(t) if t.verify == Verify::Insecure)
    }
}
