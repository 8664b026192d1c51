//! The platform's certificates, for terminate routes: read from the PEM files
//! the static config names, checked when loaded (the key matches the
//! certificate; the certificate's subjectAltName DNS names are what it
//! serves), and selected by SNI with the same rules as routes: an exact name
//! first, then the one-label `*.suffix` wildcard.
//!
//! One [`CertStore`] lives in each routing snapshot, and is what rustls asks
//! for a certificate ([`ResolvesServerCert`]), so a reload that re-reads the
//! files swaps certificates and routes in one step.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::pem_file::{self, parse_certs};
use super::validity::earliest_not_after;
use crate::config::{CertificateFiles, ConfigErrors};
use crate::host::{normalize_host, parse_host_pattern, HostPattern};
use crate::routing::{Mode, Route};

/// One loaded certificate chain with its key.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    /// What metrics and logs call it ([`CertificateFiles::name`]).
    pub label: String,
    /// The names it serves, from its subjectAltName, normalised.
    pub names: Vec<HostPattern>,
    /// Where it was read from, for messages.
    pub cert_path: PathBuf,
    pub key: Arc<CertifiedKey>,
    /// The earliest notAfter of its chain: when clients stop accepting it.
    pub not_after: DateTime<Utc>,
    /// Of the two files' bytes as read ([`PairRead::digest`]): a re-read
    /// that finds the same bytes has nothing new to load.
    pub digest: Digest,
}

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// A certificate read again (by the renewal watch), for the reconciler to
/// swap in: its position among the config's `[[certificate]]`s, and what
/// reading it gave (an error names the file).
#[derive(Debug)]
pub struct PairUpdate {
    pub index: usize,
    pub result: Result<LoadedCert, String>,
}

/// Every certificate the proxy can terminate with, indexed by name.
#[derive(Debug, Default)]
pub struct CertStore {
    certs: Vec<LoadedCert>,
    exact: HashMap<String, usize>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<String, usize>,
}

impl CertStore {
    /// Reads and checks every `[[certificate]]` of the static config
    /// (`config_file` names it in errors). All problems are reported at once;
    /// nothing is returned unless every certificate loaded.
    pub fn load(config_file: &Path, files: &[CertificateFiles]) -> Result<CertStore, ConfigErrors> {
        let mut errs = ConfigErrors::default();
        let mut store = CertStore::default();
        for (i, f) in files.iter().enumerate() {
            let at = format!("certificate[{i}]");
            match PairRead::read(f).parse(f) {
                Ok(loaded) => {
                    if let Err(why) = store.add(loaded) {
                        errs.push(config_file, format!("{at}.cert"), why);
                    }
                }
                Err((field, why)) => errs.push(config_file, format!("{at}.{field}"), why),
            }
        }
        errs.into_result(store)
    }

    /// This store with the certificate at each given position replaced
    /// (positions of the config's `[[certificate]]`s, which every store
    /// holds in order, since a store is only made when all of them load).
    /// Fails if a new certificate claims a name that another one serves.
    pub fn replaced(&self, new: Vec<(usize, LoadedCert)>) -> Result<CertStore, String> {
        let mut certs = self.certs.clone();
        for (i, c) in new {
            let slot = certs
                .get_mut(i)
                .ok_or_else(|| format!("there is no certificate[{i}]"))?;
            *slot = c;
        }
        let mut store = CertStore::default();
        for c in certs {
            store.add(c)?;
        }
        Ok(store)
    }

    /// Indexes a loaded certificate under its names. A name already served by
    /// an earlier certificate is an error: which one a client gets must never
    /// depend on file order.
    pub fn add(&mut self, cert: LoadedCert) -> Result<(), String> {
        let i = self.certs.len();
        for n in &cert.names {
            let (map, key) = match n {
                HostPattern::Exact(h) => (&self.exact, h),
                HostPattern::Wildcard(s) => (&self.wildcard, s),
            };
            if let Some(&j) = map.get(key) {
                return Err(format!(
                    "`{}`: name `{n}` is already served by `{}`",
                    cert.cert_path.display(),
                    self.certs[j].cert_path.display()
                ));
            }
        }
        for n in &cert.names {
            match n {
                HostPattern::Exact(h) => self.exact.insert(h.clone(), i),
                HostPattern::Wildcard(s) => self.wildcard.insert(s.clone(), i),
            };
        }
        self.certs.push(cert);
        Ok(())
    }

    /// The certificate for an SNI: an exact name first, then the wildcard for
    /// the name minus its first label. Without SNI (a client that dialled an
    /// IP address), the first certificate configured.
    pub fn select(&self, sni: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        self.select_index(sni)
            .and_then(|i| self.certs.get(i))
            .map(|c| &c.key)
    }

    /// The position of the certificate [`CertStore::select`] gives.
    pub fn select_index(&self, sni: Option<&str>) -> Option<usize> {
        let i = match sni {
            None => 0,
            Some(name) => {
                let name = normalized(name);
                match self.exact.get(name.as_ref()) {
                    Some(&i) => i,
                    None => {
                        let (_, suffix) = name.split_once('.')?;
                        *self.wildcard.get(suffix)?
                    }
                }
            }
        };
        (i < self.certs.len()).then_some(i)
    }

    /// The positions of every certificate valid for some name `host`
    /// matches: what a client holding a connection with that certificate
    /// may reuse it for (RFC 9113 §9.1.1). An exact host: the certificate
    /// naming it and the one whose wildcard covers it; a wildcard host:
    /// the same wildcard and every exact name one label under it (the
    /// certificates are few, so that is a short scan).
    pub fn covering(&self, host: &HostPattern) -> Vec<usize> {
        let mut out = Vec::new();
        match host {
            HostPattern::Exact(h) => {
                out.extend(self.exact.get(h).copied());
                if let Some((_, s)) = h.split_once('.') {
                    out.extend(self.wildcard.get(s).copied());
                }
            }
            HostPattern::Wildcard(s) => {
                out.extend(self.wildcard.get(s).copied());
                for (name, &i) in &self.exact {
                    if name.split_once('.').is_some_and(|(_, p)| p == s) {
                        out.push(i);
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether every name `host` matches is served by some certificate: an
    /// exact host by an exact or wildcard name, a wildcard host only by the
    /// same wildcard.
    pub fn covers(&self, host: &HostPattern) -> bool {
        match host {
            HostPattern::Exact(h) => {
                self.exact.contains_key(h)
                    || h.split_once('.')
                        .is_some_and(|(_, s)| self.wildcard.contains_key(s))
            }
            HostPattern::Wildcard(s) => self.wildcard.contains_key(s),
        }
    }

    /// Records an error for each host of a terminate route that no
    /// certificate covers; `at` names the route in the error field
    /// (`route[2]`, or route `shop`).
    pub fn check_route(&self, file: &Path, at: &str, route: &Route, errs: &mut ConfigErrors) {
        if route.mode != Mode::Terminate {
            return;
        }
        for (i, h) in route.hosts.iter().enumerate() {
            if !self.covers(h) {
                errs.push(
                    file,
                    format!("{at}.hosts[{i}]"),
                    format!(
                        "no [[certificate]] serves `{h}`; a terminate route needs one for each host"
                    ),
                );
            }
        }
    }

    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    pub fn certs(&self) -> &[LoadedCert] {
        &self.certs
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.select(hello.server_name()).cloned()
    }
}

/// Lowercases and drops a trailing dot, without allocating when the name is
/// already in that form (as the ClientHello parser and rustls give it).
fn normalized(name: &str) -> Cow<'_, str> {
    if name.ends_with('.') || name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(normalize_host(name))
    } else {
        Cow::Borrowed(name)
    }
}

/// A certificate's two files as read from disk, not yet parsed: what the
/// renewal watch compares with the live certificate before loading it.
#[derive(Debug)]
pub struct PairRead {
    cert: Result<Vec<u8>, String>,
    key: Result<Vec<u8>, String>,
}

impl PairRead {
    /// Reads both files, bounded ([`pem_file::read`]). Blocking: run it off
    /// the async workers.
    pub fn read(files: &CertificateFiles) -> Self {
        Self {
            cert: pem_file::read(&files.cert),
            key: pem_file::read(&files.key),
        }
    }

    /// Of what was read, failures included: equal digests mean the same
    /// files in the same state.
    pub fn digest(&self) -> Digest {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in [&self.cert, &self.key] {
            let (tag, bytes) = match part {
                Ok(b) => (b"ok", b.as_slice()),
                Err(e) => (b"no", e.as_bytes()),
            };
            ctx.update(tag);
            ctx.update(&(bytes.len() as u64).to_be_bytes());
            ctx.update(bytes);
        }
        let mut out = Digest::default();
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    /// Parses and checks the pair: the key matches the certificate, whose
    /// names and dates are read. On failure says which field (`cert` or
    /// `key`) and why, naming the file.
    pub fn parse(self, files: &CertificateFiles) -> Result<LoadedCert, (&'static str, String)> {
        let digest = self.digest();
        let (cert_path, key_path) = (&files.cert, &files.key);
        let chain = self
            .cert
            .and_then(|pem| parse_certs(cert_path, &pem))
            .map_err(|e| ("cert", e))?;
        let key_pem = self.key.map_err(|e| ("key", e))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            (
                "key",
                format!(
                    "`{}`: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it: {e}",
                    key_path.display()
                ),
            )
        })?;
        let signing = crate::tls::provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| {
                (
                    "key",
                    format!("`{}`: unusable private key: {e}", key_path.display()),
                )
            })?;
        let certified = CertifiedKey::new(chain, signing);
        match certified.keys_match() {
            Ok(()) => {}
            // The key type cannot tell its public half: nothing to compare.
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(e) => {
                return Err((
                    "key",
                    format!(
                        "`{}` does not belong to the certificate in `{}` ({e})",
                        key_path.display(),
                        cert_path.display()
                    ),
                ))
            }
        }
        let in_cert = |e| ("cert", format!("`{}`: {e}", cert_path.display()));
        let names = served_names(&certified.cert[0]).map_err(in_cert)?;
        let not_after = earliest_not_after(&certified.cert).map_err(in_cert)?;
        Ok(LoadedCert {
            label: files.name.clone(),
            names,
            cert_path: cert_path.to_path_buf(),
            key: Arc::new(certified),
            not_after,
            digest,
        })
    }
}

/// The DNS names (exact and `*.suffix`) in a certificate's subjectAltName.
/// The common name is ignored, as clients ignore it.
pub fn served_names(cert: &CertificateDer<'_>) -> Result<Vec<HostPattern>, String> {
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| format!("the first certificate does not parse: {e}"))?;
    let mut names = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for n in ee.valid_dns_names() {
        if let Ok(p) = parse_host_pattern(n) {
            if seen.insert(p.clone()) {
                names.push(p);
            }
        }
    }
    if names.is_empty() {
        return Err("the certificate names no DNS name in its subjectAltName".into());
    }
    Ok(names)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::standin::Ca;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Writes `leaf` as `{name}.crt` and `{name}.key` in `dir`.
    fn pair(dir: &Path, name: &str, leaf: &crate::standin::Leaf) -> CertificateFiles {
        CertificateFiles {
            name: name.into(),
            cert: write(dir, &format!("{name}.crt"), &leaf.cert_pem),
            key: write(dir, &format!("{name}.key"), &leaf.key_pem),
        }
    }

    pub(crate) fn store_for(ca: &Ca, sets: &[&[&str]]) -> CertStore {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<CertificateFiles> = sets
            .iter()
            .enumerate()
            .map(|(i, hosts)| pair(dir.path(), &format!("c{i}"), &ca.issue(hosts).unwrap()))
            .collect();
        CertStore::load(Path::new("proxy.toml"), &files).unwrap()
    }

    #[test]
    fn selection_is_exact_then_one_label_wildcard() {
        let ca = Ca::new("t").unwrap();
        let s = store_for(
            &ca,
            &[&["*.apps.example.test"], &["special.apps.example.test"]],
        );
        let wild = &s.certs()[0].key;
        let special = &s.certs()[1].key;
        let pick = |n| s.select(Some(n)).map(Arc::as_ptr);
        assert_eq!(pick("a.apps.example.test"), Some(Arc::as_ptr(wild)));
        assert_eq!(pick("A.Apps.Example.Test."), Some(Arc::as_ptr(wild)));
        assert_eq!(
            pick("special.apps.example.test"),
            Some(Arc::as_ptr(special))
        );
        assert_eq!(pick("a.b.apps.example.test"), None);
        assert_eq!(pick("apps.example.test"), None);
        assert_eq!(pick("other.test"), None);
        // No SNI: the first certificate configured.
        assert_eq!(s.select(None).map(Arc::as_ptr), Some(Arc::as_ptr(wild)));
        assert!(CertStore::default().select(None).is_none());
    }

    #[test]
    fn coverage_follows_the_route_matching_rules() {
        let ca = Ca::new("t").unwrap();
        let s = store_for(&ca, &[&["*.apps.example.test", "one.example.test"]]);
        let p = |h| parse_host_pattern(h).unwrap();
        assert!(s.covers(&p("x.apps.example.test")));
        assert!(s.covers(&p("*.apps.example.test")));
        assert!(s.covers(&p("one.example.test")));
        assert!(
            !s.covers(&p("*.example.test")),
            "an exact name covers no wildcard"
        );
        assert!(!s.covers(&p("a.b.apps.example.test")));
        assert!(!s.covers(&p("two.example.test")));
    }

    /// RSA and ECDSA keys in all three PEM forms: PKCS#8 (`PRIVATE KEY`),
    /// PKCS#1 (`RSA PRIVATE KEY`) and SEC1 (`EC PRIVATE KEY`), made by
    /// `openssl` as an operator would.
    #[test]
    fn rsa_and_ecdsa_keys_load_in_every_pem_form() {
        let dir = tempfile::tempdir().unwrap();
        let d = |n: &str| dir.path().join(n).display().to_string();
        let openssl = |args: &[&str]| {
            std::process::Command::new("openssl")
                .args(args)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        for (alg, newkey, traditional, marker) in [
            (
                "rsa",
                "rsa:2048",
                &["rsa", "-traditional"][..],
                "RSA PRIVATE KEY",
            ),
            ("ec", "ec", &["ec"][..], "EC PRIVATE KEY"),
        ] {
            let (cert, pkcs8, trad) = (
                d(&format!("{alg}.crt")),
                d(&format!("{alg}.p8")),
                d(&format!("{alg}.key")),
            );
            let mut req = vec!["req", "-x509", "-newkey", newkey];
            if alg == "ec" {
                req.extend(["-pkeyopt", "ec_paramgen_curve:prime256v1"]);
            }
            req.extend([
                "-nodes",
                "-keyout",
                &pkcs8,
                "-out",
                &cert,
                "-days",
                "1",
                "-subj",
                "/CN=k.example.test",
                "-addext",
                "subjectAltName=DNS:k.example.test",
            ]);
            if !openssl(&req) {
                eprintln!("openssl unavailable; skipping {alg}");
                return;
            }
            let mut conv = traditional.to_vec();
            conv.extend(["-in", &pkcs8, "-out", &trad]);
            assert!(openssl(&conv), "openssl {conv:?}");
            assert!(std::fs::read_to_string(&trad).unwrap().contains(marker));
            for key in [&pkcs8, &trad] {
                let files = [CertificateFiles {
                    name: alg.into(),
                    cert: PathBuf::from(&cert),
                    key: PathBuf::from(key),
                }];
                let s = CertStore::load(Path::new("proxy.toml"), &files)
                    .unwrap_or_else(|e| panic!("{alg} {key}: {e}"));
                assert!(s.select(Some("k.example.test")).is_some(), "{alg} {key}");
            }
        }
    }

    #[test]
    fn bad_files_are_errors_naming_field_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("t").unwrap();
        let a = ca.issue(&["a.example.test"]).unwrap();
        let b = ca.issue(&["b.example.test"]).unwrap();
        let a_cert = write(dir.path(), "a.crt", &a.cert_pem);
        let b_key = write(dir.path(), "b.key", &b.key_pem);
        let junk = write(dir.path(), "junk.pem", "not pem at all\n");
        let missing = dir.path().join("missing.pem");
        let files = [
            // 0: key of another certificate
            CertificateFiles {
                name: "x".into(),
                cert: a_cert.clone(),
                key: b_key.clone(),
            },
            // 1: missing certificate file
            CertificateFiles {
                name: "x".into(),
                cert: missing.clone(),
                key: b_key.clone(),
            },
            // 2: the key file holds no key
            CertificateFiles {
                name: "x".into(),
                cert: a_cert.clone(),
                key: junk.clone(),
            },
            // 3: the cert file holds no certificate
            CertificateFiles {
                name: "x".into(),
                cert: junk.clone(),
                key: b_key,
            },
        ];
        let errs = CertStore::load(Path::new("proxy.toml"), &files).unwrap_err();
        let text = errs.to_string();
        assert_eq!(errs.0.len(), 4, "{text}");
        for (field, path) in [
            ("certificate[0].key", &dir.path().join("b.key")),
            ("certificate[1].cert", &missing),
            ("certificate[2].key", &junk),
            ("certificate[3].cert", &junk),
        ] {
            let want = format!("proxy.toml: {field}: `{}`", path.display());
            assert!(text.contains(&want), "missing {want:?} in:\n{text}");
        }
        assert!(
            text.contains("does not belong to the certificate"),
            "{text}"
        );
        assert!(text.contains("cannot read"), "{text}");
    }

    /// What the renewal watch relies on: a re-read of unchanged files has
    /// the live digest, a renewal another; replacing one certificate keeps
    /// the others, and one that would claim another's name is refused.
    #[test]
    fn renewals_are_told_by_digest_and_replace_one_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("t").unwrap();
        let files: Vec<CertificateFiles> = ["a", "b"]
            .iter()
            .map(|n| {
                let host = format!("{n}.example.test");
                let l = ca.issue_until(&[&host], Some((2031, 1, 2))).unwrap();
                pair(dir.path(), n, &l)
            })
            .collect();
        let live = CertStore::load(Path::new("p.toml"), &files).unwrap();
        assert_eq!(live.certs()[0].label, "a");
        assert_eq!(
            live.certs()[0].not_after.to_rfc3339(),
            "2031-01-02T00:00:00+00:00"
        );
        assert_eq!(PairRead::read(&files[0]).digest(), live.certs()[0].digest);

        let renewed = ca.issue(&["a.example.test"]).unwrap();
        pair(dir.path(), "a", &renewed);
        let read = PairRead::read(&files[0]);
        assert_ne!(read.digest(), live.certs()[0].digest);
        let next = live
            .replaced(vec![(0, read.parse(&files[0]).unwrap())])
            .unwrap();
        let der = |s: &CertStore, n| s.select(Some(n)).unwrap().cert[0].clone();
        assert_eq!(der(&next, "a.example.test"), renewed.cert_der);
        assert_eq!(der(&next, "b.example.test"), der(&live, "b.example.test"));

        // `a` renewed for `b`'s name: two certificates would serve it.
        pair(
            dir.path(),
            "a",
            &ca.issue(&["a.example.test", "b.example.test"]).unwrap(),
        );
        let loaded = PairRead::read(&files[0]).parse(&files[0]).unwrap();
        let e = live.replaced(vec![(0, loaded)]).unwrap_err();
        assert!(e.contains("name `b.example.test` is already served"), "{e}");
    }

    #[test]
    fn a_name_served_twice_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("t").unwrap();
        let files: Vec<CertificateFiles> = (0..2)
            .map(|i| {
                pair(
                    dir.path(),
                    &i.to_string(),
                    &ca.issue(&["*.dup.example.test"]).unwrap(),
                )
            })
            .collect();
        let errs = CertStore::load(Path::new("p.toml"), &files).unwrap_err();
        assert_eq!(errs.0.len(), 1);
        assert_eq!(errs.0[0].field, "certificate[1].cert");
        assert!(errs.0[0]
            .message
            .contains("`*.dup.example.test` is already served"));
    }
}
