//! The terminate-only part of the routes schema: `alpn` and the
//! `[route.upstream]` table, validated into a [`Terminate`]. The upstream's
//! CA file is read and its rustls client config built here, at load, so a
//! bad file is a config error and never a surprise under traffic.

use std::path::{Path, PathBuf};

use rustls::pki_types::ServerName;

use super::route_spec::RouteSpec;
pub use super::route_spec::UpstreamSpec;
use super::ConfigErrors;
use crate::host::normalize_host;
use crate::routing::route::Terminate;
use crate::tls::pem_file::read_certs;
use crate::tls::upstream::{Upstream, UpstreamTls, Verify};
use crate::tls::verify::parse_pin;

/// What a terminate route with a TLS upstream and no `alpn` may give
/// clients: the backend's handshake then decides which, if any
/// (`crate::tls::alpn`), so the default is never a blind promise. A
/// plain-TCP upstream negotiates nothing, so without `alpn` it offers no
/// protocol (clients speak HTTP/1.1); `alpn = ["h2"]` states that it takes
/// HTTP/2 with prior knowledge.
pub const DEFAULT_ALPN: [&str; 2] = ["h2", "http/1.1"];

/// Validates the terminate settings of a route whose mode is `terminate`.
/// `file` anchors a relative `ca_file`; `at` names the route in errors.
pub fn validate(
    file: &Path,
    at: &str,
    spec: &RouteSpec,
    errs: &mut ConfigErrors,
) -> Option<Terminate> {
    let alpn = validate_alpn(file, at, spec.alpn.as_deref(), errs);
    let upstream = validate_upstream(file, at, spec.upstream.as_ref(), errs)?;
    let alpn = match (alpn?, &upstream) {
        (None, Upstream::Plain) => Vec::new(),
        (None, Upstream::Tls(_)) => DEFAULT_ALPN.iter().map(|p| p.as_bytes().to_vec()).collect(),
        (Some(list), _) => list,
    };
    Some(Terminate {
        h2_opt_in: spec
            .alpn
            .as_ref()
            .is_some_and(|l| l.iter().any(|p| p == "h2")),
        alpn,
        upstream,
    })
}

/// Passthrough relays the client's own TLS, so terminate settings on it
/// would be silently ignored: refuse them instead.
pub fn refuse_on_passthrough(file: &Path, at: &str, spec: &RouteSpec, errs: &mut ConfigErrors) {
    if spec.alpn.is_some() {
        errs.push(
            file,
            format!("{at}.alpn"),
            "only terminate routes take `alpn`; passthrough relays the client's own TLS",
        );
    }
    if spec.upstream.is_some() {
        errs.push(
            file,
            format!("{at}.upstream"),
            "only terminate routes take `upstream`; passthrough relays the client's own TLS",
        );
    }
}

fn validate_alpn(
    file: &Path,
    at: &str,
    alpn: Option<&[String]>,
    errs: &mut ConfigErrors,
) -> Option<Option<Vec<Vec<u8>>>> {
    let Some(list) = alpn else {
        return Some(None);
    };
    let before = errs.0.len();
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(list.len());
    let mut seen = std::collections::HashSet::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        if p.is_empty() || p.len() > 255 {
            errs.push(
                file,
                format!("{at}.alpn[{i}]"),
                "an ALPN protocol name is 1-255 bytes",
            );
        } else if !seen.insert(p.as_str()) {
            errs.push(
                file,
                format!("{at}.alpn[{i}]"),
                format!("`{p}` listed twice"),
            );
        } else {
            out.push(p.as_bytes().to_vec());
        }
    }
    (errs.0.len() == before).then_some(Some(out))
}

fn validate_upstream(
    file: &Path,
    at: &str,
    spec: Option<&UpstreamSpec>,
    errs: &mut ConfigErrors,
) -> Option<Upstream> {
    let empty = UpstreamSpec::default();
    let u = spec.unwrap_or(&empty);
    let at = format!("{at}.upstream");
    let skip = u.insecure_skip_verify == Some(true);
    if u.tls == Some(false) {
        if u.ca_file.is_some()
            || u.pin_sha256.is_some()
            || u.insecure_skip_verify.is_some()
            || u.sni.is_some()
        {
            errs.push(
                file,
                format!("{at}.tls"),
                "a plain-TCP upstream (`tls = false`) takes no `ca_file`, `pin_sha256`, `insecure_skip_verify` or `sni`",
            );
            return None;
        }
        return Some(Upstream::Plain);
    }

    let given = [u.ca_file.is_some(), u.pin_sha256.is_some(), skip];
    if given.iter().filter(|g| **g).count() != 1 {
        errs.push(
            file,
            at,
            "a TLS upstream needs exactly one of `ca_file`, `pin_sha256`, `insecure_skip_verify = true` \
             (or `tls = false` for plain TCP)",
        );
        return None;
    }
    let verify = if let Some(path) = &u.ca_file {
        let path = match resolve(file, path) {
            Ok(p) => p,
            Err(why) => {
                errs.push(file, format!("{at}.ca_file"), why);
                return None;
            }
        };
        match read_certs(&path) {
            Ok(roots) => Verify::CaFile { path, roots },
            Err(why) => {
                errs.push(file, format!("{at}.ca_file"), why);
                return None;
            }
        }
    } else if let Some(pin) = &u.pin_sha256 {
        match parse_pin(pin) {
            Ok(p) => Verify::Pin(p),
            Err(why) => {
                errs.push(file, format!("{at}.pin_sha256"), why);
                return None;
            }
        }
    } else {
        Verify::Insecure
    };

    let sni = match &u.sni {
        None => None,
        Some(s) => match ServerName::try_from(normalize_host(s)) {
            Ok(n) => Some(n),
            Err(_) => {
                errs.push(
                    file,
                    format!("{at}.sni"),
                    format!("`{s}` is not a host name or IP address"),
                );
                return None;
            }
        },
    };
    match UpstreamTls::new(verify, sni) {
        Ok(t) => Some(Upstream::Tls(t)),
        Err(why) => {
            errs.push(file, format!("{at}.ca_file"), why);
            None
        }
    }
}

/// A relative `ca_file` is relative to the routes file's directory; where
/// the route comes from no file (the admin API), it must be absolute.
fn resolve(file: &Path, path: &str) -> Result<PathBuf, String> {
    let p = Path::new(path);
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    if !file.is_file() {
        return Err(format!(
            "`{path}` must be an absolute path here (there is no routes file to be relative to)"
        ));
    }
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty());
    Ok(dir.unwrap_or(Path::new(".")).join(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routes::{parse_file, validate_all};
    use crate::routing::{Mode, Route};

    const PIN: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn one(file: &Path, toml_route: &str) -> Result<Route, ConfigErrors> {
        let text = format!(
            "[[route]]\nname = \"t\"\nhosts = [\"t.example.test\"]\nbackends = [\"127.0.0.1:1\"]\n{toml_route}"
        );
        let specs = parse_file(file, &text)?;
        validate_all(
            file,
            &specs,
            "route",
            &crate::config::ControlLimits::default(),
        )
        .map(|mut v| v.remove(0))
    }

    fn err(toml_route: &str) -> String {
        one(Path::new("r.toml"), toml_route)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn pinned_terminate_route_gets_default_alpn() {
        let r = one(
            Path::new("r.toml"),
            &format!("mode = \"terminate\"\n[route.upstream]\npin_sha256 = \"{PIN}\"\nsni = \"Enclave.Internal\"\n"),
        )
        .unwrap();
        assert_eq!(r.mode, Mode::Terminate);
        let t = r.terminate.unwrap();
        assert_eq!(t.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        let Upstream::Tls(u) = t.upstream else {
            panic!("TLS upstream expected")
        };
        assert!(matches!(u.verify, Verify::Pin(_)));
        assert_eq!(
            u.sni,
            Some(ServerName::try_from("enclave.internal").unwrap())
        );
    }

    #[test]
    fn plain_upstream_and_custom_alpn() {
        let r = one(
            Path::new("r.toml"),
            "mode = \"terminate\"\nalpn = [\"http/1.1\"]\n[route.upstream]\ntls = false\n",
        )
        .unwrap();
        let t = r.terminate.unwrap();
        assert_eq!(t.alpn, vec![b"http/1.1".to_vec()]);
        assert_eq!(t.upstream, Upstream::Plain);
    }

    #[test]
    fn a_tls_upstream_needs_exactly_one_way_to_verify() {
        for body in [
            "mode = \"terminate\"\n",
            "mode = \"terminate\"\n[route.upstream]\ninsecure_skip_verify = false\n",
            &format!("mode = \"terminate\"\n[route.upstream]\npin_sha256 = \"{PIN}\"\ninsecure_skip_verify = true\n"),
        ] {
            let e = err(body);
            assert!(
                e.starts_with("r.toml: route[0].upstream: a TLS upstream needs exactly one of"),
                "{e}"
            );
        }
    }

    #[test]
    fn field_errors_name_the_field() {
        let cases = [
            (
                "mode = \"terminate\"\n[route.upstream]\npin_sha256 = \"abc\"\n",
                "route[0].upstream.pin_sha256: a SHA-256 pin is 64 hex digits",
            ),
            (
                "mode = \"terminate\"\n[route.upstream]\ntls = false\nsni = \"x\"\n",
                "route[0].upstream.tls: a plain-TCP upstream",
            ),
            (
                "mode = \"terminate\"\n[route.upstream]\ninsecure_skip_verify = true\nsni = \"bad name\"\n",
                "route[0].upstream.sni: `bad name` is not a host name",
            ),
            (
                "mode = \"terminate\"\nalpn = [\"h2\", \"\", \"h2\"]\n[route.upstream]\ntls = false\n",
                "route[0].alpn[1]: an ALPN protocol name is 1-255 bytes",
            ),
            (
                "mode = \"terminate\"\n[route.upstream]\nca_file = \"relative.pem\"\n",
                "route[0].upstream.ca_file: `relative.pem` must be an absolute path here",
            ),
            (
                "mode = \"terminate\"\n[route.upstream]\nca_file = \"/nonexistent/ca.pem\"\n",
                "route[0].upstream.ca_file: `/nonexistent/ca.pem`: cannot read",
            ),
            (
                "alpn = [\"h2\"]\n",
                "route[0].alpn: only terminate routes take `alpn`",
            ),
            (
                "[route.upstream]\ntls = false\n",
                "route[0].upstream: only terminate routes take `upstream`",
            ),
            (
                "mode = \"terminate\"\n[route.upstream]\ncolour = \"red\"\n",
                "unknown field `colour`",
            ),
        ];
        for (body, want) in cases {
            let e = err(body);
            assert!(e.contains(want), "want {want:?} in:\n{e}");
        }
        assert!(err(
            "mode = \"terminate\"\nalpn = [\"h2\", \"h2\"]\n[route.upstream]\ntls = false\n"
        )
        .contains("route[0].alpn[1]: `h2` listed twice"));
    }

    #[test]
    fn ca_file_is_relative_to_the_routes_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::standin::Ca::new("t").unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
        let routes = dir.path().join("routes.toml");
        std::fs::write(&routes, "").unwrap();
        let r = one(
            &routes,
            "mode = \"terminate\"\n[route.upstream]\nca_file = \"ca.pem\"\n",
        )
        .unwrap();
        let Upstream::Tls(u) = r.terminate.unwrap().upstream else {
            panic!("TLS upstream expected")
        };
        match u.verify {
            Verify::CaFile { path, roots } => {
                assert_eq!(path, dir.path().join("ca.pem"));
                assert_eq!(roots, vec![ca.cert_der().clone()]);
            }
            other => panic!("{other:?}"),
        }
        // Not a certificate: refused at load, naming the field and file.
        std::fs::write(dir.path().join("ca.pem"), "junk").unwrap();
        let e = one(
            &routes,
            "mode = \"terminate\"\n[route.upstream]\nca_file = \"ca.pem\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("route[0].upstream.ca_file: `"), "{e}");
        assert!(e.contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn same_settings_compare_equal_so_reloads_keep_connections() {
        let body = format!("mode = \"terminate\"\n[route.upstream]\npin_sha256 = \"{PIN}\"\n");
        let a = one(Path::new("r.toml"), &body).unwrap();
        let b = one(Path::new("r.toml"), &body).unwrap();
        assert_eq!(a, b);
        let c = one(
            Path::new("r.toml"),
            "mode = \"terminate\"\n[route.upstream]\ninsecure_skip_verify = true\n",
        )
        .unwrap();
        assert_ne!(a, c);
        assert!(c.terminate.unwrap().upstream.is_insecure());
    }

    #[test]
    fn specs_round_trip_through_toml_and_json() {
        let mut spec = RouteSpec::terminate(
            "t",
            &["t.example.test"],
            &["127.0.0.1:1"],
            UpstreamSpec {
                pin_sha256: Some(PIN.into()),
                ..Default::default()
            },
        );
        spec.alpn = Some(vec!["http/1.1".into()]);
        let file = crate::config::routes::RoutesFile {
            route: vec![spec.clone()],
        };
        let text = toml::to_string(&file).unwrap();
        assert_eq!(
            parse_file(Path::new("r.toml"), &text).unwrap(),
            vec![spec.clone()]
        );
        let json = serde_json::to_string(&file).unwrap();
        assert_eq!(parse_file(Path::new("r.json"), &json).unwrap(), vec![spec]);
    }
}
