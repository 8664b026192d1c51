//! `mse-proxy app plan`: what the proxy would make of an app, before it is
//! deployed. Reads `mse.toml` ([`super::mse_toml`]), builds the app record a
//! platform would send, applies the same rules the admin API applies
//! ([`super::record`], [`super::derive`]) and prints the record and its
//! routes as JSON, or every violation with its field (`mse.toml` fields such
//! as `cloud.expiration_date`, or the option at fault such as `--node`).
//! With `--apply`, it then PUTs the record to a running proxy's admin API.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Local, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::derive;
use super::mse_toml::{self, AppConfig};
use super::record::{self, App, AppKey, AppRecord, CertOrigin, Context};
use super::rules::{self, ExpiryRule, Status};
use super::violation::{Field, Violation};
use crate::config::apps::AppsConfig;
use crate::config::routes::RouteSpec;
use crate::config::{Config, ConfigError, ConfigErrors};

/// Exit code for violations (as `mse-proxy check` uses for a bad config).
pub const EXIT_INVALID: u8 = 3;
/// Exit code when `--apply` cannot reach the proxy or it fails.
pub const EXIT_APPLY: u8 = 1;

/// Where command-line problems are said to be.
const CLI: &str = "command line";

/// `mse-proxy app plan` options.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// The app configuration file (`mse.toml`).
    #[arg(long, value_name = "FILE")]
    pub app_config: PathBuf,
    /// The enclave's address, `host:port`.
    #[arg(long, value_name = "HOST:PORT")]
    pub node: String,
    /// Judge dates at this instant (RFC 3339) instead of now; also the
    /// deployment time.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// The trust scenario: `self` (zero trust) or `operator` (any trust);
    /// `owner` is implied by `[cloud.ssl]`. Default: `owner` with
    /// `[cloud.ssl]`, else `self`.
    #[arg(long, value_name = "ORIGIN")]
    pub origin: Option<String>,
    /// The enclave certificate's SHA-256 (hex), required with `operator`.
    #[arg(long, value_name = "HEX")]
    pub enclave_cert_sha256: Option<String>,
    /// The status to register: spawning, initializing, running, stopped,
    /// on_error.
    #[arg(long, default_value = "running")]
    pub status: String,
    /// The platform's app domain, under which the app's generated hostnames
    /// go; default: the first of `apps.platform_domains` in `--config`.
    #[arg(long, value_name = "DOMAIN")]
    pub app_domain: Option<String>,
    /// The base URL of a running proxy's admin API (e.g.
    /// `https://10.0.0.5:9090`, with `--ca`; or `http://127.0.0.1:9090`):
    /// register the planned app there. An app
    /// already registered under the same project and name keeps its
    /// generated hostnames (a redeploy keeps the hostname).
    #[arg(long, value_name = "URL")]
    pub apply: Option<String>,
    /// The file holding the admin API's bearer token, for `--apply` (or
    /// give a client certificate with `--cert` and `--key`).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for an https `--apply`, one the proxy
    /// maps to `write` in `admin.tls.client_roles`.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// PEM CA bundle that signs the admin API's certificate, for an
    /// `https://` `--apply` (required with it: no system roots are used).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// How long connecting to the admin API may take.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub connect_timeout: std::time::Duration,
    /// How long each request to the admin API may take, connecting included.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

/// A planned app: the record to register and what it yields.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub project: String,
    pub name: String,
    pub record: AppRecord,
    /// The effective expiry after the rules, and the rule that set it.
    pub expires_at: String,
    pub expiry_rule: ExpiryRule,
    pub routes: Vec<RouteSpec>,
    /// With a custom domain (`[cloud.ssl] domain_name` outside the
    /// platform's domains): the TXT record that proves it is meant for
    /// this project (`crate::apps::ownership`), to publish before deploying.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ownership_proof: Option<super::ownership::Proof>,
}

/// What the plan takes besides the file.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    pub node: &'a str,
    pub now: DateTime<Utc>,
    pub origin: Option<&'a str>,
    pub enclave_cert_sha256: Option<&'a str>,
    pub status: &'a str,
    pub app_domain: Option<&'a str>,
    /// Hostnames to keep from a registered deployment (public, config).
    pub keep: Option<(String, Option<String>)>,
    pub id: Uuid,
}

/// Builds the plan, or every violation with its field. An option at fault
/// is reported and replaced by its default, so that the file's own problems
/// are reported in the same run.
pub fn plan(
    cfg: &AppConfig,
    input: &PlanInput<'_>,
    policy: &AppsConfig,
) -> Result<Plan, ConfigErrors> {
    let file = cfg.file.as_path();
    let cli = Path::new(CLI);
    let mut errs = ConfigErrors::default();
    let status: Status = serde_json::from_value(serde_json::Value::String(input.status.into()))
        .map_err(|_| {
            errs.push(
                cli,
                "--status",
                format!(
                    "`{}` is not one of spawning, initializing, running, stopped, on_error",
                    input.status
                ),
            )
        })
        .ok()
        .unwrap_or(Status::Running);
    let implied = if cfg.ssl.is_some() {
        CertOrigin::Owner
    } else {
        CertOrigin::Enclave
    };
    let origin = match (input.origin, &cfg.ssl) {
        (None, Some(_)) | (Some("owner"), Some(_)) => Some(CertOrigin::Owner),
        (None, None) | (Some("self"), None) => Some(CertOrigin::Enclave),
        (Some("operator"), None) => Some(CertOrigin::Operator),
        (Some("owner"), None) => {
            errs.push(
                cli,
                "--origin",
                "`owner` needs a [cloud.ssl] section in the app configuration",
            );
            None
        }
        (Some(o @ ("self" | "operator")), Some(_)) => {
            errs.push(
                cli,
                "--origin",
                format!("`{o}` contradicts [cloud.ssl], which makes the app `owner`"),
            );
            None
        }
        (Some(other), _) => {
            errs.push(
                cli,
                "--origin",
                format!("`{other}` is not one of self, owner, operator"),
            );
            None
        }
    }
    .unwrap_or(implied);
    let (keep_public, keep_config) = match &input.keep {
        Some((p, c)) => (Some(p.clone()), c.clone()),
        None => (None, None),
    };
    let needs_generated = match origin {
        CertOrigin::Owner => keep_config.is_none(),
        CertOrigin::Operator => keep_public.is_none() || keep_config.is_none(),
        CertOrigin::Enclave => keep_public.is_none(),
    };
    let app_domain = input
        .app_domain
        .map(str::to_string)
        .or_else(|| policy.platform_domains.first().cloned())
        .unwrap_or_else(|| {
            if needs_generated {
                errs.push(
                    cli,
                    "--app-domain",
                    "the app's generated hostnames need the platform's app domain: give --app-domain, or --config with apps.platform_domains",
                );
            }
            // Reserved (RFC 2606): the rest is still checked.
            "app-domain.invalid".into()
        });
    let generated = |label: &str| {
        let hex = input.id.simple().to_string();
        format!("{}{label}.{app_domain}", &hex[..12])
    };
    let (domain_name, config_domain_name) = match (origin, &cfg.ssl) {
        (CertOrigin::Owner, Some(ssl)) => (
            ssl.domain_name.clone(),
            Some(keep_config.unwrap_or_else(|| generated(""))),
        ),
        (CertOrigin::Operator, _) => (
            keep_public.unwrap_or_else(|| generated("")),
            Some(keep_config.unwrap_or_else(|| generated("-config"))),
        ),
        _ => (keep_public.unwrap_or_else(|| generated("")), keep_config),
    };
    let c = &cfg.toml.cloud;
    let record = AppRecord {
        id: input.id,
        domain_name,
        config_domain_name,
        ssl_certificate_origin: origin,
        hardware: c.hardware.clone(),
        expires_at: cfg.expiration.map(rules::stamp),
        deployed_at: Some(rules::stamp(input.now)),
        owner_certificate: cfg
            .ssl
            .as_ref()
            .filter(|_| origin == CertOrigin::Owner)
            .map(|s| s.certificate_pem.clone()),
        node: input.node.to_string(),
        enclave_cert_sha256: input.enclave_cert_sha256.map(str::to_string),
        limits: None,
        status,
    };
    let key = AppKey {
        project: c.project.clone(),
        name: cfg.toml.name.clone(),
    };
    let ctx = Context {
        policy,
        now: input.now,
        previous: None,
    };
    let app = record::validate(&key, record, ctx);
    if let Err(v) = &app {
        errs.0
            .extend(v.iter().map(|v| toml_violation(file, cfg, v.clone())));
    }
    let app: App = match app {
        Ok(app) if errs.is_empty() => app,
        _ => return Err(errs),
    };
    let specs = derive::specs(&app, policy, &Default::default());
    derive::routes(&app, &specs)?;
    let ownership_proof = cfg
        .ssl
        .as_ref()
        .filter(|_| !policy.is_platform_host(&app.domain))
        .map(|_| super::ownership::Proof::new(&app.domain, &key.project));
    Ok(Plan {
        ownership_proof,
        project: key.project,
        name: key.name,
        expires_at: rules::stamp(app.expiry.at),
        expiry_rule: app.expiry.rule,
        record: app.record,
        routes: specs,
    })
}

/// A rule's violation, named as the user wrote it: the `mse.toml` key, or
/// the option that supplied the value.
fn toml_violation(file: &Path, cfg: &AppConfig, v: Violation) -> ConfigError {
    let cli = Path::new(CLI);
    let (at, field) = match v.field {
        Field::Project => (file, "cloud.project"),
        Field::Name => (file, "name"),
        Field::Hardware => (file, "cloud.hardware"),
        Field::ExpiresAt => (file, "cloud.expiration_date"),
        Field::OwnerCertificate => (file, "cloud.ssl.certificate"),
        Field::DomainName if cfg.ssl.is_some() => (file, "cloud.ssl.domain_name"),
        Field::DomainName | Field::ConfigDomainName => (cli, "--app-domain"),
        Field::Node => (cli, "--node"),
        Field::EnclaveCertSha256 => (cli, "--enclave-cert-sha256"),
        Field::Status => (cli, "--status"),
        Field::SslCertificateOrigin => (cli, "--origin"),
        Field::DeployedAt => (cli, "--now"),
        Field::Id => (cli, "id"),
        // `mse.toml` has no limits and plan sets none: never reached.
        Field::Limits => (cli, "limits"),
    };
    ConfigError::new(at, field, v.message)
}

/// Runs `app plan`: prints the plan as JSON on `out`, problems on `err`;
/// returns the exit code. `proxy_config` is the proxy's static config, for
/// its `[apps]` policy (defaults without it).
pub fn run(
    args: &PlanArgs,
    proxy_config: Option<&Path>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    match run_inner(args, proxy_config, out, err) {
        Ok(()) => 0,
        Err(Failure::Invalid(errs)) => {
            let _ = writeln!(err, "{errs}");
            let _ = writeln!(err, "{} problem(s)", errs.0.len());
            EXIT_INVALID
        }
        Err(Failure::Apply(msg)) => {
            let _ = writeln!(err, "error: {msg}");
            EXIT_APPLY
        }
    }
}

enum Failure {
    Invalid(ConfigErrors),
    Apply(String),
}

impl From<ConfigErrors> for Failure {
    fn from(e: ConfigErrors) -> Self {
        Failure::Invalid(e)
    }
}

fn run_inner(
    args: &PlanArgs,
    proxy_config: Option<&Path>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Failure> {
    let policy = match proxy_config {
        Some(p) => Config::load(p)?.apps,
        None => AppsConfig::default(),
    };
    let now = match &args.now {
        None => Utc::now(),
        Some(s) => rules::parse_zoned(s)
            .map_err(|e| ConfigErrors::from(ConfigError::new(Path::new(CLI), "--now", e)))?,
    };
    let cfg = mse_toml::load(&args.app_config, &Local)?;
    let mut input = PlanInput {
        node: &args.node,
        now,
        origin: args.origin.as_deref(),
        enclave_cert_sha256: args.enclave_cert_sha256.as_deref(),
        status: &args.status,
        app_domain: args.app_domain.as_deref(),
        keep: None,
        id: Uuid::new_v4(),
    };
    let Some(url) = &args.apply else {
        let p = plan(&cfg, &input, &policy)?;
        print_json(out, &p);
        return Ok(());
    };
    let token = match &args.token_file {
        None if args.cert.is_some() => None,
        // The proxy's own token file format (`name:token` lines allowed):
        // the first token is sent.
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| e.to_string())
            .and_then(|text| crate::admin::tokens::parse("token", &text))
            .map_err(|e| Failure::Apply(format!("--token-file {}: {e}", f.display())))?
            .swap_remove(0)
            .1
            .into(),
        None => {
            return Err(Failure::Apply(
                "--apply needs --token-file, or --cert and --key".into(),
            ))
        }
    };
    // Plan first: a file that breaks the rules is never sent.
    let first = plan(&cfg, &input, &policy)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Apply(format!("cannot start a runtime: {e}")))?;
    rt.block_on(async {
        let client = Apply::new(url, &first.project, &first.name, token, args)?;
        input.keep = client.registered_hosts().await?;
        let p = if input.keep.is_some() {
            plan(&cfg, &input, &policy)?
        } else {
            first
        };
        print_json(out, &p);
        client.put(&p.record, err).await
    })
}

fn print_json(out: &mut dyn Write, v: &impl Serialize) {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    let _ = writeln!(out, "{text}");
}

/// The HTTP client for `--apply`: timeouts always; for `https://`, rustls
/// trusting only `--ca` (the admin API's own CA, not the system's roots).
fn http_client(url: &reqwest::Url, args: &PlanArgs) -> Result<reqwest::Client, Failure> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(args.connect_timeout)
        .timeout(args.timeout);
    match (url.scheme(), &args.ca) {
        ("https", Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in crate::tls::pem_file::read_certs(ca)
                .map_err(|e| Failure::Apply(format!("--ca {e}")))?
            {
                roots
                    .add(c)
                    .map_err(|e| Failure::Apply(format!("--ca `{}`: {e}", ca.display())))?;
            }
            let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::clone(
                crate::tls::provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| Failure::Apply(e.to_string()))?
            .with_root_certificates(roots);
            let tls = match (&args.cert, &args.key) {
                (Some(cert), Some(key)) => {
                    let chain = crate::tls::pem_file::read_certs(cert)
                        .map_err(|e| Failure::Apply(format!("--cert {e}")))?;
                    let key_der = crate::tls::pem_file::read(key)
                        .and_then(|pem| {
                            use rustls::pki_types::pem::PemObject;
                            rustls::pki_types::PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                                format!("`{}`: no PEM private key: {e}", key.display())
                            })
                        })
                        .map_err(|e| Failure::Apply(format!("--key {e}")))?;
                    tls.with_client_auth_cert(chain, key_der).map_err(|e| {
                        Failure::Apply(format!("--cert and --key do not go together: {e}"))
                    })?
                }
                _ => tls.with_no_client_auth(),
            };
            b = b.use_preconfigured_tls(tls).https_only(true);
        }
        ("https", None) => {
            return Err(Failure::Apply(format!(
                "--apply `{url}` is https: give --ca FILE, the CA of the admin API's certificate"
            )))
        }
        (_, Some(_)) => {
            return Err(Failure::Apply(format!(
                "--ca is for an https:// --apply, not `{url}`"
            )))
        }
        _ if args.cert.is_some() => {
            return Err(Failure::Apply(format!(
                "--cert is for an https:// --apply, not `{url}`"
            )))
        }
        _ => {}
    }
    b.build()
        .map_err(|e| Failure::Apply(format!("cannot build the HTTP client: {e}")))
}

/// The admin API of a running proxy, for one app.
struct Apply {
    client: reqwest::Client,
    url: reqwest::Url,
    /// `None`: the client certificate authenticates.
    token: Option<String>,
}

impl Apply {
    fn new(
        base: &str,
        project: &str,
        name: &str,
        token: Option<String>,
        args: &PlanArgs,
    ) -> Result<Self, Failure> {
        let mut url = reqwest::Url::parse(base)
            .map_err(|e| Failure::Apply(format!("--apply `{base}`: {e}")))?;
        url.path_segments_mut()
            .map_err(|_| Failure::Apply(format!("--apply `{base}` cannot take a path")))?
            .pop_if_empty()
            .extend(["apps", project, name]);
        Ok(Self {
            client: http_client(&url, args)?,
            url,
            token,
        })
    }

    /// The `Authorization` header, if a token is used.
    fn auth(&self) -> reqwest::header::HeaderMap {
        let mut h = reqwest::header::HeaderMap::new();
        if let Some(v) = self
            .token
            .as_ref()
            .and_then(|t| reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).ok())
        {
            h.insert(reqwest::header::AUTHORIZATION, v);
        }
        h
    }

    /// The hostnames of the deployment registered under this key, if any.
    async fn registered_hosts(&self) -> Result<Option<(String, Option<String>)>, Failure> {
        let resp = self
            .client
            .get(self.url.clone())
            .headers(self.auth())
            .send()
            .await
            .map_err(|e| Failure::Apply(format!("GET {}: {e}", self.url)))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let v: serde_json::Value = resp
            .error_for_status()
            .map_err(|e| Failure::Apply(format!("GET {}: {e}", self.url)))?
            .json()
            .await
            .map_err(|e| Failure::Apply(format!("GET {}: {e}", self.url)))?;
        let r = &v["record"];
        Ok(r["domain_name"].as_str().map(|d| {
            (
                d.to_string(),
                r["config_domain_name"].as_str().map(str::to_string),
            )
        }))
    }

    async fn put(&self, record: &AppRecord, err: &mut dyn Write) -> Result<(), Failure> {
        let resp = self
            .client
            .put(self.url.clone())
            .headers(self.auth())
            .json(record)
            .send()
            .await
            .map_err(|e| Failure::Apply(format!("PUT {}: {e}", self.url)))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status.is_success() {
            let _ = writeln!(err, "applied: PUT {} -> {status}", self.url);
            return Ok(());
        }
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if status == reqwest::StatusCode::BAD_REQUEST {
            let list = v["violations"].as_array().cloned().unwrap_or_default();
            return Err(Failure::Invalid(ConfigErrors(
                list.iter()
                    .map(|x| {
                        ConfigError::new(
                            Path::new(self.url.as_str()),
                            x["field"].as_str().unwrap_or_default(),
                            x["message"].as_str().unwrap_or_default(),
                        )
                    })
                    .collect(),
            )));
        }
        Err(Failure::Apply(format!(
            "PUT {} -> {status}: {}",
            self.url,
            v["error"].as_str().unwrap_or(&body)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    fn example(dir: &Path, extra: &str) -> AppConfig {
        for d in ["code", "tests"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let text = format!(
            "name = \"shop\"\npython_application = \"app:app\"\nhealthcheck_endpoint = \"/\"\n\
             tests_cmd = \"pytest\"\ntests_requirements = []\n[cloud]\ncode = \"code\"\n\
             tests = \"tests\"\ndocker = \"ghcr.io/cosmian/mse-flask:1\"\nproject = \"p\"\n{extra}"
        );
        mse_toml::parse(
            &dir.join("mse.toml"),
            &text,
            &FixedOffset::east_opt(0).unwrap(),
        )
        .unwrap()
    }

    fn input() -> PlanInput<'static> {
        PlanInput {
            node: "10.0.0.1:443",
            now: rules::parse_zoned("2030-01-01T00:00:00Z").unwrap(),
            origin: None,
            enclave_cert_sha256: None,
            status: "running",
            app_domain: Some("apps.example.com"),
            keep: None,
            id: Uuid::from_u128(0xabcdef0123456789),
        }
    }

    #[test]
    fn free_hardware_plan() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = example(dir.path(), "hardware = \"4g-eu-001\"\n");
        let p = plan(&cfg, &input(), &AppsConfig::default()).unwrap();
        assert_eq!(p.expires_at, "2030-01-01T04:00:00Z");
        assert_eq!(p.expiry_rule, ExpiryRule::FreeHardware);
        assert_eq!(p.routes.len(), 1);
        assert_eq!(p.routes[0].name, "app.p.shop");
        assert!(p.routes[0].hosts[0].ends_with(".apps.example.com"));
    }

    #[test]
    fn operator_plan_needs_a_pin_named_by_its_option() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = example(dir.path(), "hardware = \"2g-eu-001\"\n");
        let mut i = input();
        i.origin = Some("operator");
        let e = plan(&cfg, &i, &AppsConfig::default()).unwrap_err();
        assert_eq!(e.0[0].field, "--enclave-cert-sha256");
        let pin = "ab".repeat(32);
        i.enclave_cert_sha256 = Some(&pin);
        let p = plan(&cfg, &i, &AppsConfig::default()).unwrap();
        assert_eq!(p.routes.len(), 2);
        assert_eq!(p.routes[1].mode, "terminate");
        i.app_domain = None;
        let e = plan(&cfg, &i, &AppsConfig::default()).unwrap_err();
        assert_eq!(e.0[0].field, "--app-domain");
    }
}
