//! When a certificate chain stops working: the earliest notAfter among its
//! certificates, since once any link has expired the chain no longer
//! verifies. Read with x509-parser, for the platform's certificates (their
//! expiry gauge) and for app owners' chains (which cap an app's expiry).

use chrono::{DateTime, TimeZone, Utc};
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The earliest notAfter of `chain`; an error (one sentence, naming the
/// certificate by position) if one does not parse or the chain is empty.
pub fn earliest_not_after(chain: &[CertificateDer<'_>]) -> Result<DateTime<Utc>, String> {
    let mut earliest: Option<DateTime<Utc>> = None;
    for (i, der) in chain.iter().enumerate() {
        let (_, cert) = X509Certificate::from_der(der.as_ref())
            .map_err(|e| format!("certificate {i} of the chain does not parse: {e}"))?;
        let t = Utc
            .timestamp_opt(cert.validity().not_after.timestamp(), 0)
            .single()
            .ok_or_else(|| format!("certificate {i} of the chain has an unusable notAfter"))?;
        earliest = Some(earliest.map_or(t, |n| n.min(t)));
    }
    earliest.ok_or_else(|| "no certificate in the chain".into())
}
