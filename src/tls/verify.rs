//! Upstream certificate checks for terminate routes that do not verify
//! against a CA: a SHA-256 pin of the backend's end-entity certificate (what
//! an enclave's self-signed RA-TLS certificate needs), or, when a route says
//! so explicitly, no check of the certificate at all.
//!
//! Both still verify the handshake signatures with the provider's
//! algorithms, so the backend must hold the private key of the certificate it
//! shows: a pin names a key, not just some bytes anyone could replay.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, SignatureScheme};

/// Parses a SHA-256 fingerprint: 64 hex digits, either case, optionally
/// separated by `:` as `openssl x509 -fingerprint -sha256` prints them.
pub fn parse_pin(s: &str) -> Result<[u8; 32], String> {
    let hex: Vec<u8> = s.bytes().filter(|&b| b != b':').collect();
    if hex.len() != 64 {
        return Err(format!(
            "a SHA-256 pin is 64 hex digits (optionally `:`-separated); this has {}",
            hex.len()
        ));
    }
    let mut pin = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        match (digit(pair[0]), digit(pair[1])) {
            (Some(hi), Some(lo)) => pin[i] = (hi * 16 + lo) as u8,
            _ => return Err("a SHA-256 pin holds only hex digits and `:`".into()),
        }
    }
    Ok(pin)
}

/// Lowercase hex of a digest, for messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The signature algorithms of the process's crypto provider.
fn algorithms() -> WebPkiSupportedAlgorithms {
    crate::tls::provider().signature_verification_algorithms
}

/// Checks an upstream certificate by pin, or (explicitly configured) not at
/// all. Chain, names and dates are never looked at: with a pin, the pin is
/// the identity; either way the handshake signatures are verified.
#[derive(Debug)]
pub struct KeyVerifier {
    /// `None`: any certificate (`insecure_skip_verify = true`).
    pin: Option<[u8; 32]>,
}

impl KeyVerifier {
    /// Accepts exactly one end-entity certificate: the one whose DER hashes
    /// to `pin`.
    pub fn pinned(pin: [u8; 32]) -> Self {
        Self { pin: Some(pin) }
    }

    /// Accepts any certificate: the connection to the backend is encrypted
    /// but not authenticated.
    pub fn skip() -> Self {
        Self { pin: None }
    }
}

/// The backend showed a certificate other than the pinned one. rustls
/// prints this with `Debug` in its error text, so `Debug` says it in words.
struct PinMismatch {
    seen: String,
}

impl fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certificate does not match the route's pin_sha256 (its SHA-256 is {})",
            self.seen
        )
    }
}

impl std::error::Error for PinMismatch {}

impl ServerCertVerifier for KeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(pin) = &self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let seen = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, end_entity.as_ref());
        if aws_lc_rs::constant_time::verify_slices_are_equal(seen.as_ref(), pin).is_ok() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinMismatch {
                    seen: hex(seen.as_ref()),
                })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn pins_parse_in_hex_with_or_without_colons() {
        let p = parse_pin(PIN).unwrap();
        assert_eq!(hex(&p), PIN);
        assert_eq!(parse_pin(&PIN.to_uppercase()).unwrap(), p);
        let colons: Vec<String> = p.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(parse_pin(&colons.join(":")).unwrap(), p);
    }

    #[test]
    fn bad_pins_say_why() {
        assert!(parse_pin("").unwrap_err().contains("64 hex digits"));
        assert!(parse_pin(&PIN[..62]).unwrap_err().contains("has 62"));
        let bad = format!("{}zz", &PIN[..62]);
        assert!(parse_pin(&bad).unwrap_err().contains("only hex digits"));
        // Multi-byte characters are not hex digits, and never panic.
        let utf8 = format!("{}é", &PIN[..62]);
        assert!(parse_pin(&utf8).is_err());
    }

    #[test]
    fn pin_accepts_only_the_pinned_certificate() {
        let ca = crate::standin::Ca::new("t").unwrap();
        let a = ca.issue(&["a.test"]).unwrap();
        let b = ca.issue(&["a.test"]).unwrap();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, a.cert_der.as_ref());
        let mut pin = [0u8; 32];
        pin.copy_from_slice(digest.as_ref());
        let v = KeyVerifier::pinned(pin);
        let name = ServerName::try_from("a.test").unwrap();
        let now = UnixTime::now();
        assert!(v
            .verify_server_cert(&a.cert_der, &[], &name, &[], now)
            .is_ok());
        let err = v
            .verify_server_cert(&b.cert_der, &[], &name, &[], now)
            .unwrap_err();
        assert!(err.to_string().contains("pin_sha256"), "{err}");
    }
}
