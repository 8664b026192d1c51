//! The `[admin]` section of the static config: where the admin API listens,
//! who may use it (token files by role, client certificates), and the limits
//! that keep a hostile client from holding it (timeouts, connections, body
//! sizes). Raw serde shape in, validated [`AdminConfig`] out; every error
//! names the file and field, and every number has bounds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ConfigErrors;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: String,
    /// File of write tokens (one per line, optionally `name:token`).
    pub token_file: Option<PathBuf>,
    /// Environment variable holding one write token.
    pub token_env: Option<String>,
    /// File of read-only tokens, same format.
    pub read_token_file: Option<PathBuf>,
    /// File of tokens that may only scrape `/metrics`; absent: `/metrics`
    /// is open.
    pub metrics_token_file: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (logged as a warning).
    #[serde(default)]
    pub allow_plaintext: bool,
    pub tls: Option<RawAdminTls>,
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_max_route_body")]
    pub max_route_body: usize,
    #[serde(default = "default_max_app_body")]
    pub max_app_body: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// PEM CA bundle that signs the operators' client certificates.
    pub client_ca: Option<PathBuf>,
    /// Client certificate subject common name → `read`, `write` or `metrics`.
    #[serde(default)]
    pub client_roles: BTreeMap<String, String>,
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_connections() -> usize {
    64
}
fn default_max_route_body() -> usize {
    64 * 1024
}
fn default_max_app_body() -> usize {
    1024 * 1024
}

/// What a credential may do. Ordered: each role may do what the ones below
/// it may (a write token also reads and scrapes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// `GET /metrics` only (when `metrics_token_file` puts it behind tokens).
    Metrics,
    /// Every `GET`: routes, apps, metrics.
    Read,
    /// Changes: `PUT`, `DELETE`, `POST /reload`, and everything above.
    Write,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Metrics => "metrics",
            Role::Read => "read",
            Role::Write => "write",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        match s {
            "metrics" => Some(Role::Metrics),
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            _ => None,
        }
    }
}

/// Where the admin API's write token comes from (`token_file` or
/// `token_env`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    File(PathBuf),
    Env(String),
    /// No write token configured: every write is refused.
    None,
}

/// One token file and the role its tokens have, with the config field that
/// named it (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFile {
    pub field: &'static str,
    pub path: PathBuf,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    /// Client certificate subject CN → role; a valid certificate whose CN is
    /// not here authenticates nobody.
    pub client_roles: BTreeMap<String, Role>,
}

/// Limits of the admin HTTP server: what one client can hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminHttp {
    /// From accept (or the end of the last answer) to a request's whole
    /// header.
    pub header_read_timeout: Duration,
    /// From a request's header to its whole answer, body read included.
    pub request_timeout: Duration,
    /// A kept-alive connection with no request this long is closed.
    pub idle_timeout: Duration,
    /// Admin connections open at once; beyond, new ones wait in the kernel's
    /// backlog.
    pub max_connections: usize,
    pub max_route_body: usize,
    pub max_app_body: usize,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub address: SocketAddr,
    /// The write token (`token_file` / `token_env`).
    pub token: TokenSource,
    /// Every token file, write first.
    pub token_files: Vec<TokenFile>,
    /// `/metrics` needs a token (`metrics_token_file` is set).
    pub metrics_auth: bool,
    pub tls: Option<AdminTls>,
    pub allow_plaintext: bool,
    pub http: AdminHttp,
}

/// Bounds of every admin duration: below, a slow but honest client on a
/// long link fails; above, a hostile one holds a slot for too long.
const TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(600));
const CONNECTIONS_RANGE: (usize, usize) = (1, 10_000);
/// A route is a few hundred bytes; an app record carries an owner
/// certificate chain (a few KiB): 1 KiB to 16 MiB covers both with room.
const BODY_RANGE: (usize, usize) = (1024, 16 * 1024 * 1024);

pub(super) fn validate(
    path: &Path,
    base: &Path,
    a: RawAdmin,
    errs: &mut ConfigErrors,
) -> Option<AdminConfig> {
    let address = match a.address.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => {
            errs.push(
                path,
                "admin.address",
                format!("`{}` is not `ip:port`", a.address),
            );
            return None;
        }
    };
    let token = match (&a.token_file, &a.token_env) {
        (Some(_), Some(_)) => {
            errs.push(
                path,
                "admin.token_file",
                "give token_file or token_env, not both",
            );
            TokenSource::None
        }
        (Some(f), None) => TokenSource::File(base.join(f)),
        (None, Some(v)) => TokenSource::Env(v.clone()),
        (None, None) => TokenSource::None,
    };
    let mut token_files = Vec::new();
    for (field, file, role) in [
        ("admin.token_file", &a.token_file, Role::Write),
        ("admin.read_token_file", &a.read_token_file, Role::Read),
        (
            "admin.metrics_token_file",
            &a.metrics_token_file,
            Role::Metrics,
        ),
    ] {
        if let Some(f) = file {
            token_files.push(TokenFile {
                field,
                path: base.join(f),
                role,
            });
        }
    }

    for (name, d) in [
        ("admin.header_read_timeout", a.header_read_timeout),
        ("admin.request_timeout", a.request_timeout),
        ("admin.idle_timeout", a.idle_timeout),
    ] {
        if d < TIMEOUT_RANGE.0 || d > TIMEOUT_RANGE.1 {
            errs.push(
                path,
                name,
                format!(
                    "{} is outside {}..={}",
                    humantime::format_duration(d),
                    humantime::format_duration(TIMEOUT_RANGE.0),
                    humantime::format_duration(TIMEOUT_RANGE.1)
                ),
            );
        }
    }
    let n = a.max_connections;
    if n < CONNECTIONS_RANGE.0 || n > CONNECTIONS_RANGE.1 {
        errs.push(
            path,
            "admin.max_connections",
            format!(
                "{n} is outside {}..={}",
                CONNECTIONS_RANGE.0, CONNECTIONS_RANGE.1
            ),
        );
    }
    for (name, n) in [
        ("admin.max_route_body", a.max_route_body),
        ("admin.max_app_body", a.max_app_body),
    ] {
        if n < BODY_RANGE.0 || n > BODY_RANGE.1 {
            errs.push(
                path,
                name,
                format!("{n} bytes is outside {}..={}", BODY_RANGE.0, BODY_RANGE.1),
            );
        }
    }

    let tls = a.tls.map(|t| {
        if !t.client_roles.is_empty() && t.client_ca.is_none() {
            errs.push(
                path,
                "admin.tls.client_roles",
                "needs admin.tls.client_ca, the CA that signs the client certificates",
            );
        }
        let mut client_roles = BTreeMap::new();
        for (cn, role) in t.client_roles {
            match Role::parse(&role) {
                Some(r) => {
                    client_roles.insert(cn, r);
                }
                None => errs.push(
                    path,
                    format!("admin.tls.client_roles.{cn}"),
                    format!("`{role}` is not one of `read`, `write`, `metrics`"),
                ),
            }
        }
        AdminTls {
            cert: base.join(t.cert),
            key: base.join(t.key),
            client_ca: t.client_ca.map(|c| base.join(c)),
            client_roles,
        }
    });
    if tls.is_none() && !a.allow_plaintext && !address.ip().is_loopback() {
        errs.push(
            path,
            "admin.address",
            format!(
                "{address} is not a loopback address: tokens would cross the network in clear; \
                 give [admin.tls] cert and key, or set admin.allow_plaintext = true"
            ),
        );
    }

    Some(AdminConfig {
        address,
        token,
        metrics_auth: a.metrics_token_file.is_some(),
        token_files,
        tls,
        allow_plaintext: a.allow_plaintext,
        http: AdminHttp {
            header_read_timeout: a.header_read_timeout,
            request_timeout: a.request_timeout,
            idle_timeout: a.idle_timeout,
            max_connections: a.max_connections,
            max_route_body: a.max_route_body,
            max_app_body: a.max_app_body,
        },
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn load(admin: &str) -> Result<Config, String> {
        let text = format!("[[listener]]\naddress = \"127.0.0.1:1\"\n[admin]\n{admin}");
        Config::from_toml(Path::new("/etc/mse/proxy.toml"), &text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_bounded_and_loopback_needs_no_tls() {
        let c = load("address = \"127.0.0.1:9090\"\n").unwrap();
        let a = c.admin.unwrap();
        assert_eq!(a.http.header_read_timeout.as_secs(), 5);
        assert_eq!(a.http.max_connections, 64);
        assert!(a.token_files.is_empty() && !a.metrics_auth && a.tls.is_none());
    }

    #[test]
    fn plaintext_on_a_public_address_is_refused_unless_allowed() {
        let e = load("address = \"0.0.0.0:9090\"\n").unwrap_err();
        assert!(
            e.contains("/etc/mse/proxy.toml: admin.address: 0.0.0.0:9090 is not a loopback"),
            "{e}"
        );
        assert!(load("address = \"[::]:9090\"\n").is_err());
        assert!(load("address = \"0.0.0.0:9090\"\nallow_plaintext = true\n").is_ok());
        let c =
            load("address = \"0.0.0.0:9090\"\n[admin.tls]\ncert = \"a.crt\"\nkey = \"a.key\"\n")
                .unwrap();
        assert_eq!(
            c.admin.unwrap().tls.unwrap().cert,
            Path::new("/etc/mse/a.crt")
        );
    }

    #[test]
    fn every_bad_value_is_named() {
        let e = load(
            "address = \"127.0.0.1:9090\"\nheader_read_timeout = \"0s\"\nidle_timeout = \"2h\"\n\
             max_connections = 0\nmax_route_body = 10\n\
             [admin.tls]\ncert = \"a\"\nkey = \"b\"\n[admin.tls.client_roles]\nops = \"root\"\n",
        )
        .unwrap_err();
        for field in [
            "admin.header_read_timeout",
            "admin.idle_timeout",
            "admin.max_connections",
            "admin.max_route_body",
            "admin.tls.client_roles: needs",
            "admin.tls.client_roles.ops: `root`",
        ] {
            assert!(e.contains(&format!("proxy.toml: {field}")), "{field}: {e}");
        }
    }

    #[test]
    fn token_files_by_role_relative_to_the_config() {
        let c = load(
            "address = \"127.0.0.1:9090\"\ntoken_file = \"w\"\nread_token_file = \"/r\"\n\
             metrics_token_file = \"m\"\n",
        )
        .unwrap();
        let a = c.admin.unwrap();
        let files: Vec<_> = a
            .token_files
            .iter()
            .map(|f| (f.field, f.path.display().to_string(), f.role.as_str()))
            .collect();
        assert_eq!(
            files,
            [
                ("admin.token_file", "/etc/mse/w".into(), "write"),
                ("admin.read_token_file", "/r".into(), "read"),
                ("admin.metrics_token_file", "/etc/mse/m".into(), "metrics")
            ]
        );
        assert!(a.metrics_auth);
    }
}
