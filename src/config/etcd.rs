//! The `[etcd]` section of the static config: the route store several
//! instances share (see `crate::routing::sources::etcd`). Raw serde shape
//! in, validated [`EtcdConfig`] out; every error names the file and field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ConfigErrors;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcd {
    /// `http://host:port` or `https://host:port`, one per cluster member.
    pub endpoints: Vec<String>,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// How long one connection attempt may take.
    #[serde(default = "default_dial_timeout", with = "humantime_serde")]
    pub dial_timeout: Duration,
    /// How long one read or transaction may take.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How often the watch is asked for its progress: a watch that does not
    /// answer within `request_timeout` is taken as lost.
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Longest wait between reconnection attempts (they start at 100 ms and
    /// double).
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    pub username: Option<String>,
    /// File holding the password (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    pub tls: Option<RawEtcdTls>,
    /// Removed: the local cache of etcd now lives in `state_dir`. Still
    /// parsed, so a config that sets it is refused with a message that
    /// says what replaced it instead of "unknown field".
    pub fallback_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcdTls {
    /// PEM CA bundle that signs the etcd servers' certificates.
    pub ca: Option<PathBuf>,
    /// Client certificate chain and key (PEM), for client-certificate auth.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Name to verify in the servers' certificates, if not the endpoint's.
    pub server_name: Option<String>,
}

fn default_prefix() -> String {
    "/mse-proxy/".into()
}
fn default_dial_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(5)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(10)
}

/// Where the etcd password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    File(PathBuf),
    Env(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca: Option<PathBuf>,
    /// Client certificate and key, both or neither.
    pub identity: Option<(PathBuf, PathBuf)>,
    pub server_name: Option<String>,
}

/// The validated `[etcd]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    /// Always ends with `/`; routes live under `{prefix}routes/`.
    pub prefix: String,
    pub dial_timeout: Duration,
    pub request_timeout: Duration,
    pub heartbeat: Duration,
    pub backoff_max: Duration,
    pub user: Option<(String, PasswordSource)>,
    pub tls: Option<EtcdTls>,
}

/// Validates `[etcd]`; relative paths are taken against `base`.
pub fn validate(
    path: &Path,
    base: &Path,
    raw: RawEtcd,
    errs: &mut ConfigErrors,
) -> Option<EtcdConfig> {
    let before = errs.0.len();
    // Refused rather than ignored or read once: the old file was written
    // without fsync and could hold routes deleted since, served again
    // after a restart with etcd down (issue 16); the cache in state_dir is
    // rebuilt from etcd at the first read, so nothing is lost by not
    // reading it. `mse-proxy check` says so before an upgrade is rolled.
    if raw.fallback_file.is_some() {
        errs.push(
            path,
            "etcd.fallback_file",
            "is no longer supported: the last set read from etcd is kept in state_dir (etcd-cache.redb, written atomically and fsynced); remove this key and make sure state_dir is writable",
        );
    }
    if raw.endpoints.is_empty() {
        errs.push(path, "etcd.endpoints", "at least one endpoint is required");
    }
    let mut https = 0;
    for (i, e) in raw.endpoints.iter().enumerate() {
        let rest = if let Some(r) = e.strip_prefix("https://") {
            https += 1;
            r
        } else if let Some(r) = e.strip_prefix("http://") {
            r
        } else {
            errs.push(
                path,
                format!("etcd.endpoints[{i}]"),
                format!("`{e}` must start with `http://` or `https://`"),
            );
            continue;
        };
        let hostport = rest.trim_end_matches('/');
        let ok = hostport
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok || hostport.contains('/') {
            errs.push(
                path,
                format!("etcd.endpoints[{i}]"),
                format!("`{e}` is not `scheme://host:port`"),
            );
        }
    }
    if https != 0 && https != raw.endpoints.len() {
        errs.push(
            path,
            "etcd.endpoints",
            "mix of `http://` and `https://` endpoints",
        );
    }
    if raw.tls.is_some() && https == 0 && !raw.endpoints.is_empty() {
        errs.push(
            path,
            "etcd.tls",
            "set, but the endpoints are `http://`; use `https://` endpoints",
        );
    }
    let prefix = raw.prefix;
    if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix.len() < 2 {
        errs.push(
            path,
            "etcd.prefix",
            format!("`{prefix}` must start and end with `/`, e.g. `/mse-proxy/`"),
        );
    }
    for (name, d) in [
        ("etcd.dial_timeout", raw.dial_timeout),
        ("etcd.request_timeout", raw.request_timeout),
        ("etcd.heartbeat", raw.heartbeat),
        ("etcd.backoff_max", raw.backoff_max),
    ] {
        if d.is_zero() {
            errs.push(path, name, "must be greater than zero");
        }
        super::bounds::check(path, name, d, errs);
    }
    let password = match (raw.password_file, raw.password_env) {
        (Some(_), Some(_)) => {
            errs.push(
                path,
                "etcd.password_file",
                "give password_file or password_env, not both",
            );
            None
        }
        (Some(f), None) => Some(PasswordSource::File(base.join(f))),
        (None, Some(v)) => Some(PasswordSource::Env(v)),
        (None, None) => None,
    };
    let user = match (raw.username, password) {
        (Some(u), Some(p)) if !u.is_empty() => Some((u, p)),
        (Some(_), Some(_)) => {
            errs.push(path, "etcd.username", "is empty");
            None
        }
        (Some(_), None) => {
            errs.push(path, "etcd.username", "needs password_file or password_env");
            None
        }
        (None, Some(_)) => {
            errs.push(path, "etcd.username", "is required with a password");
            None
        }
        (None, None) => None,
    };
    let tls = raw.tls.and_then(|t| {
        let identity = match (t.cert, t.key) {
            (Some(c), Some(k)) => Some((base.join(c), base.join(k))),
            (None, None) => None,
            (Some(_), None) => {
                errs.push(path, "etcd.tls.key", "is required with etcd.tls.cert");
                return None;
            }
            (None, Some(_)) => {
                errs.push(path, "etcd.tls.cert", "is required with etcd.tls.key");
                return None;
            }
        };
        Some(EtcdTls {
            ca: t.ca.map(|c| base.join(c)),
            identity,
            server_name: t.server_name,
        })
    });
    if errs.0.len() > before {
        return None;
    }
    Some(EtcdConfig {
        endpoints: raw
            .endpoints
            .iter()
            .map(|e| e.trim_end_matches('/').to_string())
            .collect(),
        prefix,
        dial_timeout: raw.dial_timeout,
        request_timeout: raw.request_timeout,
        heartbeat: raw.heartbeat,
        backoff_max: raw.backoff_max,
        user,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<EtcdConfig, String> {
        let raw: RawEtcd = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut errs = ConfigErrors::default();
        let c = validate(Path::new("/etc/p.toml"), Path::new("/etc"), raw, &mut errs);
        match c {
            Some(c) if errs.is_empty() => Ok(c),
            _ => Err(errs.to_string()),
        }
    }

    #[test]
    fn the_removed_fallback_file_is_refused_pointing_to_state_dir() {
        let e = check("endpoints = [\"http://127.0.0.1:2379\"]\nfallback_file = \"cache.json\"\n")
            .unwrap_err();
        assert!(
            e.contains("/etc/p.toml: etcd.fallback_file: is no longer supported")
                && e.contains("state_dir"),
            "{e}"
        );
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = check("endpoints = [\"http://127.0.0.1:2379/\"]\n").unwrap();
        assert_eq!(c.endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(c.prefix, "/mse-proxy/");
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert!(c.user.is_none() && c.tls.is_none());
    }

    #[test]
    fn every_problem_names_its_field() {
        let e = check(
            "endpoints = [\"127.0.0.1:2379\", \"http://a\"]\nprefix = \"routes\"\n\
             heartbeat = \"0s\"\nusername = \"u\"\n",
        )
        .unwrap_err();
        for field in [
            "etcd.endpoints[0]: ",
            "etcd.endpoints[1]: ",
            "etcd.prefix: ",
            "etcd.heartbeat: ",
            "etcd.username: ",
        ] {
            assert!(e.contains(&format!("/etc/p.toml: {field}")), "{field}: {e}");
        }
    }

    #[test]
    fn tls_needs_https_and_both_halves_of_an_identity() {
        let e = check("endpoints = [\"http://h:1\"]\n[tls]\ncert = \"c.pem\"\n").unwrap_err();
        assert!(e.contains("etcd.tls: "), "{e}");
        assert!(e.contains("etcd.tls.key: "), "{e}");
        let c = check(
            "endpoints = [\"https://h:1\"]\nusername = \"u\"\npassword_env = \"P\"\n\
             [tls]\nca = \"ca.pem\"\n",
        )
        .unwrap();
        assert_eq!(c.tls.unwrap().ca, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(c.user, Some(("u".into(), PasswordSource::Env("P".into()))));
    }
}
