//! The owner certificate of an app-owner-trust app (`[cloud.ssl]
//! certificate`, the full chain in PEM): the proxy never serves it (the key
//! stays in the enclave) but reads two facts from it, for the rules in
//! [`super::rules`]: until when it is valid and which names it covers.

use chrono::{DateTime, Utc};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::host::normalize_host;
use crate::tls::validity::earliest_not_after;

/// What the rules need from an owner certificate chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerCertificate {
    /// The earliest notAfter of the chain: once any link has expired, the
    /// chain no longer verifies, so that is when the app's TLS stops working.
    pub not_after: DateTime<Utc>,
    /// The leaf's DNS names, lowercase, `*.` wildcards as written. From the
    /// subjectAltName; the common name only when there is no subjectAltName
    /// at all (as clients treat legacy certificates).
    pub names: Vec<String>,
}

/// Parses a PEM chain (leaf first). Errors are one sentence, for a
/// violation message.
pub fn parse_chain(pem: &str) -> Result<OwnerCertificate, String> {
    let ders = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate chain: {e}"))?;
    let Some(leaf_der) = ders.first() else {
        return Err("no PEM certificate in it".into());
    };
    let not_after = earliest_not_after(&ders)?;
    let (_, leaf) = X509Certificate::from_der(leaf_der.as_ref())
        .map_err(|e| format!("the leaf certificate does not parse: {e}"))?;
    let names = leaf_names(&leaf)?;
    Ok(OwnerCertificate { not_after, names })
}

fn leaf_names(leaf: &X509Certificate<'_>) -> Result<Vec<String>, String> {
    let san = leaf
        .subject_alternative_name()
        .map_err(|e| format!("the leaf's subjectAltName does not parse: {e}"))?;
    let names: Vec<String> = match san {
        Some(san) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(normalize_host(d)),
                _ => None,
            })
            .collect(),
        None => leaf
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .map(normalize_host)
            .collect(),
    };
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rcgen::{CertificateParams, KeyPair};

    fn cert(names: &[&str], not_after: (i32, u8, u8)) -> String {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        p.self_signed(&KeyPair::generate().unwrap()).unwrap().pem()
    }

    #[test]
    fn reads_names_and_the_earliest_not_after_of_the_chain() {
        let leaf = cert(&["Shop.Customer.com", "*.customer.com"], (2031, 1, 1));
        let intermediate = cert(&["ca.example"], (2030, 6, 1));
        let c = parse_chain(&format!("{leaf}{intermediate}")).unwrap();
        assert_eq!(c.names, vec!["shop.customer.com", "*.customer.com"]);
        assert_eq!(
            c.not_after,
            Utc.with_ymd_and_hms(2030, 6, 1, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn junk_is_an_error_not_a_panic() {
        for bad in [
            "",
            "hello",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        ] {
            assert!(parse_chain(bad).is_err(), "{bad:?}");
        }
    }
}
