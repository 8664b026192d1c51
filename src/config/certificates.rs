//! `[[certificate]]`: the platform's certificates for terminate routes, as
//! file paths and the name each is known by in metrics and logs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::raw::RawCertificate;
use super::route_spec::valid_route_name;
use super::ConfigErrors;

/// A `[[certificate]]`: PEM chain and key paths, resolved against the
/// config file's directory. The files are read by
/// [`crate::tls::certs::CertStore::load`] at start and on every reload, and
/// watched for renewals (`crate::routing::sources::certificates`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// The `certificate` label of its metrics: the configured `name`, else
    /// the cert file's name, else (when two certificates' files share a
    /// name, as certbot's `live/<domain>/fullchain.pem` do) the cert path as
    /// written in the config. Distinct across certificates.
    pub name: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Resolves the paths against `base` and names every certificate; a name
/// given twice, or not of route-name characters, is an error.
pub fn validate(
    path: &Path,
    base: &Path,
    raw: &[RawCertificate],
    errs: &mut ConfigErrors,
) -> Vec<CertificateFiles> {
    let file_name = |c: &RawCertificate| {
        c.cert
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| c.cert.to_string_lossy().into_owned())
    };
    let mut file_names: HashMap<String, usize> = HashMap::new();
    for c in raw.iter().filter(|c| c.name.is_none()) {
        *file_names.entry(file_name(c)).or_default() += 1;
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, c) in raw.iter().enumerate() {
        let name = match &c.name {
            Some(n) => {
                if !valid_route_name(n) {
                    errs.push(
                        path,
                        format!("certificate[{i}].name"),
                        format!("`{n}` must be 1-128 characters of letters, digits, `.`, `_`, `-`"),
                    );
                }
                n.clone()
            }
            None => match file_name(c) {
                n if file_names[&n] > 1 => c.cert.to_string_lossy().into_owned(),
                n => n,
            },
        };
        if let Some(j) = seen.insert(name.clone(), i) {
            errs.push(
                path,
                format!("certificate[{i}].name"),
                format!("`{name}` already names certificate[{j}]; give each a distinct `name`"),
            );
        }
        out.push(CertificateFiles {
            name,
            cert: base.join(&c.cert),
            key: base.join(&c.key),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(name: Option<&str>, cert: &str) -> RawCertificate {
        RawCertificate {
            name: name.map(String::from),
            cert: cert.into(),
            key: "k.pem".into(),
        }
    }

    fn names(list: &[RawCertificate]) -> Result<Vec<String>, String> {
        let mut errs = ConfigErrors::default();
        let out = validate(Path::new("p.toml"), Path::new("/etc"), list, &mut errs);
        errs.into_result(out.into_iter().map(|c| c.name).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn named_by_name_then_file_name_then_path_when_file_names_repeat() {
        let got = names(&[
            raw(Some("wildcard"), "w.crt"),
            raw(None, "certs/other.crt"),
            raw(None, "live/a.example/fullchain.pem"),
            raw(None, "live/b.example/fullchain.pem"),
        ])
        .unwrap();
        assert_eq!(
            got,
            [
                "wildcard",
                "other.crt",
                "live/a.example/fullchain.pem",
                "live/b.example/fullchain.pem"
            ]
        );
    }

    #[test]
    fn names_must_be_distinct_and_plain() {
        let e = names(&[raw(Some("a.crt"), "x.crt"), raw(None, "a.crt")]).unwrap_err();
        assert!(
            e.contains("p.toml: certificate[1].name: `a.crt` already names certificate[0]"),
            "{e}"
        );
        let e = names(&[raw(Some("bad name"), "x.crt")]).unwrap_err();
        assert!(
            e.contains("p.toml: certificate[0].name: `bad name` must be"),
            "{e}"
        );
    }
}
