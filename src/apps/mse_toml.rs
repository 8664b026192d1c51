//! The app configuration file, `mse.toml`, read exactly as the platform
//! documents it (mse-app-config.md, "The app configuration file"): the main
//! section, `[cloud]`, and `[cloud.ssl]` for a custom domain. The docs list
//! every key of the three tables, so unknown keys are errors (a typo never
//! silently drops, say, an expiration date). Paths are relative to the
//! file's directory (`secrets`, `private_key` and `certificate` may also be
//! absolute).
//!
//! Only the certificate is read: its notAfter and names feed the rules. The
//! private key and the secrets go to the enclave and nowhere else, so the
//! proxy only checks that they exist.

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;

use super::rules;
use crate::config::{ConfigError, ConfigErrors};
use crate::host::parse_host_pattern;
use crate::routing::route::HostPattern;

/// The main section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MseToml {
    pub name: String,
    pub python_application: String,
    pub healthcheck_endpoint: String,
    pub tests_cmd: String,
    pub tests_requirements: Vec<String>,
    /// Required to deploy, which is what a plan is for.
    pub cloud: Cloud,
}

/// `[cloud]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cloud {
    pub code: String,
    pub tests: String,
    pub docker: String,
    pub project: String,
    pub hardware: String,
    /// A string (`"2023-06-29 00:00:00+00:00"`, as the docs write it) or a
    /// TOML date-time; without a zone, local time.
    #[serde(default)]
    pub expiration_date: Option<toml::Value>,
    #[serde(default)]
    pub secrets: Option<String>,
    #[serde(default)]
    pub ssl: Option<Ssl>,
}

/// `[cloud.ssl]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssl {
    pub domain_name: String,
    pub private_key: String,
    pub certificate: String,
}

/// A checked `mse.toml`, with what the rules need from it.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub file: PathBuf,
    pub toml: MseToml,
    /// `expiration_date`, as an instant.
    pub expiration: Option<DateTime<Utc>>,
    /// `[cloud.ssl]`: the custom domain and the certificate chain's PEM.
    pub ssl: Option<CustomDomain>,
}

#[derive(Debug, Clone)]
pub struct CustomDomain {
    /// As written; the rules check it.
    pub domain_name: String,
    pub certificate_pem: String,
}

/// Reads and checks `path`; a time without a zone is taken in `local`.
/// Every problem is reported, each with its dotted field.
pub fn load<Tz: TimeZone>(path: &Path, local: &Tz) -> Result<AppConfig, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, "", format!("cannot read: {e}")))?;
    parse(path, &text, local)
}

/// Checks `text` as the file at `path` (which anchors relative paths).
pub fn parse<Tz: TimeZone>(path: &Path, text: &str, local: &Tz) -> Result<AppConfig, ConfigErrors> {
    let toml: MseToml =
        toml::from_str(text).map_err(|e| crate::config::toml_error(path, text, &e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut errs = ConfigErrors::default();
    let mut err = |field: &str, msg: String| errs.push(path, field, msg);

    if !(1..=255).contains(&toml.name.chars().count()) {
        err("name", "must be 1-255 characters".into());
    }
    match toml.python_application.split_once(':') {
        Some((m, v)) if !m.is_empty() && !v.is_empty() && !v.contains(':') => {}
        _ => err(
            "python_application",
            format!(
                "`{}` is not `module_name:flask_variable_name` (exactly one `:`)",
                toml.python_application
            ),
        ),
    }
    if !toml.healthcheck_endpoint.starts_with('/') {
        err(
            "healthcheck_endpoint",
            format!("`{}` must start with `/`", toml.healthcheck_endpoint),
        );
    }

    let c = &toml.cloud;
    for (field, dir) in [("cloud.code", &c.code), ("cloud.tests", &c.tests)] {
        if Path::new(dir).is_absolute() {
            err(
                field,
                format!("`{dir}` must be relative to the configuration file"),
            );
        } else if !base.join(dir).is_dir() {
            err(
                field,
                format!("`{}` is not a directory", base.join(dir).display()),
            );
        }
    }
    if let Err(why) = remote_image(&c.docker) {
        err("cloud.docker", format!("`{}`: {why}", c.docker));
    }
    if !(1..=255).contains(&c.project.chars().count()) {
        err("cloud.project", "must be 1-255 characters".into());
    }
    if !(1..=16).contains(&c.hardware.chars().count()) {
        err(
            "cloud.hardware",
            "must be 1-16 characters, such as `4g-eu-001`".into(),
        );
    }
    let expiration = match &c.expiration_date {
        None => None,
        Some(v) => {
            let text = match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Datetime(d) if d.date.is_some() && d.time.is_some() => {
                    Ok(d.to_string())
                }
                toml::Value::Datetime(d) => Err(format!("`{d}` needs a date and a time")),
                other => Err(format!("a {} is not a date", other.type_str())),
            };
            match text.and_then(|t| rules::parse_local(&t, local)) {
                Ok(t) => Some(t),
                Err(e) => {
                    err("cloud.expiration_date", e);
                    None
                }
            }
        }
    };
    if let Some(s) = &c.secrets {
        must_be_file(base, s, "cloud.secrets", &mut err);
    }
    let ssl = c.ssl.as_ref().and_then(|ssl| {
        if let Err(why) = parse_host_pattern(&ssl.domain_name).and_then(|p| match p {
            HostPattern::Exact(_) => Ok(()),
            HostPattern::Wildcard(_) => Err("a domain name, not a wildcard".to_string()),
        }) {
            err(
                "cloud.ssl.domain_name",
                format!("`{}`: {why}", ssl.domain_name),
            );
        }
        must_be_file(base, &ssl.private_key, "cloud.ssl.private_key", &mut err);
        let cert = base.join(&ssl.certificate);
        match std::fs::read_to_string(&cert) {
            Ok(pem) => Some(CustomDomain {
                domain_name: ssl.domain_name.clone(),
                certificate_pem: pem,
            }),
            Err(e) => {
                err(
                    "cloud.ssl.certificate",
                    format!("`{}`: cannot read: {e}", cert.display()),
                );
                None
            }
        }
    });
    errs.into_result(AppConfig {
        file: path.to_path_buf(),
        toml,
        expiration,
        ssl,
    })
}

/// "It could be a local docker to run local test but it must be a remote
/// url when deploying": a registry host (with a `.` or a port, or
/// `localhost`) before the first `/`.
fn remote_image(image: &str) -> Result<(), String> {
    if image.is_empty() || image.chars().any(char::is_whitespace) {
        return Err("an image reference has no spaces and is not empty".into());
    }
    match image.split_once('/') {
        Some((host, rest))
            if !rest.is_empty()
                && (host.contains('.') || host.contains(':') || host == "localhost") =>
        {
            Ok(())
        }
        _ => Err("must be a remote image URL to deploy, such as `ghcr.io/cosmian/mse-flask:20230710125733`".into()),
    }
}

/// A path (absolute, or relative to the file) that must name a file; the
/// file is not read.
fn must_be_file(base: &Path, p: &str, field: &str, err: &mut impl FnMut(&str, String)) {
    let full = base.join(p);
    if !full.is_file() {
        err(field, format!("`{}` is not a file", full.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    const DOC_EXAMPLE: &str = r#"
name = "test"
python_application = "app:app"
healthcheck_endpoint = "/"
tests_cmd = "pytest"
tests_requirements = [ "intel-sgx-ra>=1.0.1,<1.1", "pytest==7.2.0",]

[cloud]
code = "."
tests = "."
docker = "ghcr.io/cosmian/mse-flask:20230710125733"
project = "my_project"
hardware = "4g-eu-001"
"#;

    fn utc() -> FixedOffset {
        FixedOffset::east_opt(0).unwrap()
    }

    fn fields(e: ConfigErrors) -> Vec<String> {
        e.0.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn the_documented_example_parses() {
        let dir = tempfile::tempdir().unwrap();
        let c = parse(&dir.path().join("mse.toml"), DOC_EXAMPLE, &utc()).unwrap();
        assert_eq!(c.toml.cloud.project, "my_project");
        assert!(c.expiration.is_none() && c.ssl.is_none());
    }

    #[test]
    fn expiration_date_as_string_or_toml_datetime() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mse.toml");
        let plus2 = FixedOffset::east_opt(7200).unwrap();
        for (line, want) in [
            (
                "expiration_date = \"2030-06-29 00:00:00+00:00\"",
                "2030-06-29T00:00:00Z",
            ),
            (
                "expiration_date = \"2030-06-29 00:00:00\"",
                "2030-06-28T22:00:00Z",
            ),
            (
                "expiration_date = 2030-06-29T00:00:00Z",
                "2030-06-29T00:00:00Z",
            ),
            (
                "expiration_date = 2030-06-29T00:00:00",
                "2030-06-28T22:00:00Z",
            ),
        ] {
            let text = format!("{DOC_EXAMPLE}{line}\n");
            let c = parse(&file, &text, &plus2).unwrap();
            assert_eq!(
                c.expiration,
                Some(rules::parse_zoned(want).unwrap()),
                "{line}"
            );
        }
        for bad in [
            "expiration_date = 2030-06-29",
            "expiration_date = 3",
            "expiration_date = \"soon\"",
        ] {
            let text = format!("{DOC_EXAMPLE}{bad}\n");
            let e = parse(&file, &text, &plus2).unwrap_err();
            assert_eq!(fields(e), vec!["cloud.expiration_date"], "{bad}");
        }
    }

    #[test]
    fn every_problem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"
name = ""
python_application = "app"
healthcheck_endpoint = "health"
tests_cmd = "pytest"
tests_requirements = []
[cloud]
code = "/abs"
tests = "missing"
docker = "mse-flask"
project = ""
hardware = "a-very-long-hardware-name"
secrets = "secrets.json"
[cloud.ssl]
domain_name = "*.owner.com"
private_key = "key.pem"
certificate = "cert.pem"
"#;
        let e = parse(&dir.path().join("mse.toml"), text, &utc()).unwrap_err();
        assert_eq!(
            fields(e),
            vec![
                "name",
                "python_application",
                "healthcheck_endpoint",
                "cloud.code",
                "cloud.tests",
                "cloud.docker",
                "cloud.project",
                "cloud.hardware",
                "cloud.secrets",
                "cloud.ssl.domain_name",
                "cloud.ssl.private_key",
                "cloud.ssl.certificate",
            ]
        );
    }

    #[test]
    fn unknown_and_missing_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mse.toml");
        let e = parse(&file, &DOC_EXAMPLE.replace("hardware", "hardwear"), &utc())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `hardwear`"), "{e}");
        let e = parse(
            &file,
            &DOC_EXAMPLE.replace("tests_cmd = \"pytest\"\n", ""),
            &utc(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("missing field `tests_cmd`"), "{e}");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any text, TOML or not, is an answer, never a panic.
        #[test]
        fn any_file_is_answered(text in ".{0,200}", key in "[a-z_.]{1,20}", value in ".{0,30}") {
            let dir = std::env::temp_dir();
            let path = dir.join("mse.toml");
            let utc = chrono::FixedOffset::east_opt(0).unwrap();
            let _ = parse(&path, &text, &utc);
            let _ = parse(&path, &format!("{key} = {value:?}\n[cloud]\n{key} = {value}\n"), &utc);
        }
    }
}
