//! TLS on the admin listener (`[admin.tls]`): its own certificate and key,
//! and, with `client_ca`, client certificates verified against that CA.
//! A client certificate is optional (tokens still work, and probes need
//! none); a verified one whose subject CN `client_roles` maps to a role
//! authenticates the request ([`super::auth`]). Read at start and again on
//! SIGHUP ([`AdminTlsAcceptor::reload`]): a renewed admin certificate is
//! served to new connections without a restart; a pair that does not load
//! keeps the one in service.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::auth::PeerCert;
use crate::config::admin::AdminTls;
use crate::config::ConfigErrors;
use crate::tls::pem_file::read_certs;

/// Accepts admin TLS connections and names their client certificate.
#[derive(Clone)]
pub struct AdminTlsAcceptor {
    current: Arc<ArcSwap<TlsAcceptor>>,
    config_file: Arc<Path>,
    settings: Arc<AdminTls>,
}

impl AdminTlsAcceptor {
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> std::io::Result<(TlsStream<TcpStream>, Option<PeerCert>)> {
        let acceptor = TlsAcceptor::clone(&self.current.load());
        let tls = acceptor.accept(tcp).await?;
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|leaf| peer_cert(leaf.as_ref()));
        Ok((tls, peer))
    }
}

/// The subject of a (verified) client certificate.
fn peer_cert(der: &[u8]) -> Option<PeerCert> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    Some(PeerCert {
        subject: subject.to_string(),
        common_name,
    })
}

impl AdminTlsAcceptor {
    /// Re-reads the certificate, key and client CA (on a blocking thread);
    /// all or nothing: on an error the config in service stays, and the
    /// error is logged. True if the new files are in service.
    pub async fn reload(&self) -> bool {
        let (file, t) = (Arc::clone(&self.config_file), Arc::clone(&self.settings));
        match tokio::task::spawn_blocking(move || acceptor(&file, &t)).await {
            Ok(Ok(a)) => {
                self.current.store(Arc::new(a));
                tracing::info!(cert = %self.settings.cert.display(), "admin TLS files re-read");
                true
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "admin TLS files refused; the certificate in service stays");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the admin TLS files failed");
                false
            }
        }
    }
}

/// Builds the acceptor: every problem as `config: admin.tls.FIELD:
/// reason`, the reason naming the file.
pub fn load(config_file: &Path, t: &AdminTls) -> Result<AdminTlsAcceptor, ConfigErrors> {
    Ok(AdminTlsAcceptor {
        current: Arc::new(ArcSwap::from_pointee(acceptor(config_file, t)?)),
        config_file: Arc::from(config_file),
        settings: Arc::new(t.clone()),
    })
}

fn acceptor(config_file: &Path, t: &AdminTls) -> Result<TlsAcceptor, ConfigErrors> {
    let mut errs = ConfigErrors::default();
    let chain = read_certs(&t.cert).map_err(|e| errs.push(config_file, "admin.tls.cert", e));
    let key = crate::tls::pem_file::read(&t.key)
        .and_then(|pem| {
            PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                format!(
                    "`{}`: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it: {e}",
                    t.key.display()
                )
            })
        })
        .map_err(|e| errs.push(config_file, "admin.tls.key", e));
    let verifier = match &t.client_ca {
        None => Ok(None),
        Some(ca) => client_verifier(ca)
            .map(Some)
            .map_err(|e| errs.push(config_file, "admin.tls.client_ca", e)),
    };
    let (Ok(chain), Ok(key), Ok(verifier)) = (chain, key, verifier) else {
        return Err(errs);
    };
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(crate::tls::provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            ConfigErrors::from(crate::config::ConfigError::new(
                config_file,
                "admin.tls",
                e.to_string(),
            ))
        })?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(chain, key).map_err(|e| {
        ConfigErrors::from(crate::config::ConfigError::new(
            config_file,
            "admin.tls.key",
            format!(
                "`{}` does not go with `{}`: {e}",
                t.key.display(),
                t.cert.display()
            ),
        ))
    })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Verifies client certificates against `ca`, letting clients without one
/// through (to the tokens and the open probes).
fn client_verifier(
    ca: &Path,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let certs: Vec<CertificateDer<'static>> = read_certs(ca)?;
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots
            .add(c)
            .map_err(|e| format!("`{}`: not a usable CA certificate: {e}", ca.display()))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(crate::tls::provider()))
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("`{}`: {e}", ca.display()))
}

/// A key file others can read is worth a warning (not a refusal: secret
/// volumes often mount 0644 by default, and the operator may have no say).
pub fn warn_if_shared(key: &Path) {
    if let Ok(m) = std::fs::metadata(key) {
        let mode = m.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %key.display(),
                mode = format!("{:04o}", mode & 0o7777),
                "admin.tls.key is accessible to its group or others; chmod 600 it"
            );
        }
    }
}
