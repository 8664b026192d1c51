//! The app record: what the platform tells the proxy about one deployment
//! (`PUT /apps/{project}/{name}`), and its validation into an [`App`] under
//! the rules of [`super::rules`]. Every violation is collected, each with
//! its field.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::certificate::{self, OwnerCertificate};
use super::rules::{self, Expiry, ExpiryInput, Status};
use super::violation::{Field, Violation};
use crate::config::apps::AppsConfig;
use crate::config::route_limits::{RouteLimits, RouteLimitsSpec};
use crate::config::routes::parse_backend;
use crate::host::parse_host_pattern;
use crate::routing::route::HostPattern;
use crate::tls::verify::parse_pin;

/// Who holds the certificate clients see (mse-app-config.md, "Trust
/// scenarios").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CertOrigin {
    /// Zero trust: the enclave's self-signed RA-TLS certificate. Passthrough.
    #[serde(rename = "self")]
    Enclave,
    /// App-owner trust: the owner's CA-signed chain, its key in the enclave.
    /// Passthrough.
    #[serde(rename = "owner")]
    Owner,
    /// Any trust: the platform's certificate. The proxy terminates, then
    /// opens TLS to the enclave, pinned.
    #[serde(rename = "operator")]
    Operator,
}

/// One app deployment, as the platform sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRecord {
    /// This deployment; a redeploy under the same (project, name) has a new one.
    pub id: Uuid,
    /// The public hostname: generated under the platform's domain, or the
    /// owner's custom domain (`[cloud.ssl] domain_name`).
    pub domain_name: String,
    /// The configuration hostname (attestation, secrets); absent: the same
    /// as `domain_name` (the zero-trust case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_domain_name: Option<String>,
    pub ssl_certificate_origin: CertOrigin,
    pub hardware: String,
    /// The expiry asked for (RFC 3339 with a zone); the rules may shorten it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When this deployment started (RFC 3339); absent: now, or, for a record
    /// with the id already registered, the time it was first registered (a
    /// status update must not restart the free-hardware clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_at: Option<String>,
    /// The owner's PEM chain, required with `owner`: caps the expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_certificate: Option<String>,
    /// The enclave: `host:port`.
    pub node: String,
    /// The enclave certificate's SHA-256 (hex), required with `operator`:
    /// the re-encrypted upstream connection accepts only that certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enclave_cert_sha256: Option<String>,
    pub status: Status,
    /// The platform's limits for this app (its tier, say): the connection
    /// cap and new-connection rate of each of its routes, as a route's own
    /// `limits`; absent fields take `[limits]`'s defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<RouteLimitsSpec>,
}

/// An app's identity: "Two apps of one project with one name cannot run at
/// once", so (project, name) is the key, and a new record under it replaces
/// the old one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct AppKey {
    pub project: String,
    pub name: String,
}

impl std::fmt::Display for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.project, self.name)
    }
}

/// A validated app, with everything the routes are derived from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub key: AppKey,
    /// As given, with `deployed_at` filled in.
    pub record: AppRecord,
    /// `domain_name`, normalised.
    pub domain: String,
    /// `config_domain_name`, normalised; `None` when absent or the same as
    /// `domain`.
    pub config_domain: Option<String>,
    pub deployed_at: DateTime<Utc>,
    pub expiry: Expiry,
    pub owner_certificate: Option<OwnerCertificate>,
}

impl App {
    /// Every hostname of the app: the public one, then the configuration one
    /// if it differs.
    pub fn hosts(&self) -> impl Iterator<Item = (Field, &str)> {
        std::iter::once((Field::DomainName, self.domain.as_str())).chain(
            self.config_domain
                .as_deref()
                .map(|h| (Field::ConfigDomainName, h)),
        )
    }
}

/// What validation needs besides the record.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub policy: &'a AppsConfig,
    pub now: DateTime<Utc>,
    /// The app registered under this key now, if any.
    pub previous: Option<&'a App>,
}

/// "`name` (1–255 chars, unique per project)", "`project` (1–255)".
pub fn check_key(key: &AppKey) -> Vec<Violation> {
    let mut v = Vec::new();
    for (field, value) in [(Field::Project, &key.project), (Field::Name, &key.name)] {
        if !(1..=255).contains(&value.chars().count()) {
            v.push(Violation::new(field, "must be 1-255 characters"));
        } else if value.chars().any(char::is_control) {
            v.push(Violation::new(field, "must not hold control characters"));
        }
    }
    v
}

/// Validates `record` under `key`; returns every violation.
pub fn validate(
    key: &AppKey,
    mut record: AppRecord,
    ctx: Context<'_>,
) -> Result<App, Vec<Violation>> {
    let mut v = check_key(key);
    if record.id.is_nil() {
        v.push(Violation::new(Field::Id, "the nil UUID is not an app id"));
    }
    let domain = hostname(&record.domain_name, Field::DomainName, &mut v);
    let config_domain = record
        .config_domain_name
        .as_deref()
        .and_then(|h| hostname(h, Field::ConfigDomainName, &mut v))
        .filter(|c| domain.as_ref() != Some(c));
    if !(1..=16).contains(&record.hardware.chars().count()) {
        v.push(Violation::new(
            Field::Hardware,
            "a hardware name is 1-16 characters, such as `4g-eu-001`",
        ));
    }
    if let Err(why) = parse_backend(&record.node) {
        v.push(Violation::new(
            Field::Node,
            format!("`{}`: {why}", record.node),
        ));
    }

    let owner_certificate = trust(&record, domain.as_deref(), config_domain.is_some(), &mut v);
    if let Some(limits) = &record.limits {
        check_limits(limits, &mut v);
    }

    let requested = record.expires_at.as_deref().and_then(|s| {
        rules::parse_zoned(s)
            .map_err(|e| v.push(Violation::new(Field::ExpiresAt, e)))
            .ok()
    });
    let deployed_at = match record.deployed_at.as_deref() {
        Some(s) => rules::parse_zoned(s)
            .map_err(|e| v.push(Violation::new(Field::DeployedAt, e)))
            .ok(),
        // Same deployment as the one registered: its clock keeps running.
        None => Some(
            ctx.previous
                .filter(|p| p.record.id == record.id)
                .map_or(ctx.now, |p| p.deployed_at),
        ),
    };
    let certificate_not_after = owner_certificate.as_ref().map(|c| c.not_after);
    let expiry = deployed_at.and_then(|deployed_at| {
        let input = ExpiryInput {
            requested,
            hardware: &record.hardware,
            deployed_at,
            certificate_not_after,
        };
        rules::expiry(&input, ctx.policy, ctx.now)
            .map_err(|e| v.extend(e))
            .ok()
    });

    match (domain, deployed_at, expiry) {
        (Some(domain), Some(deployed_at), Some(expiry)) if v.is_empty() => {
            record.deployed_at = Some(rules::stamp(deployed_at));
            Ok(App {
                key: key.clone(),
                record,
                domain,
                config_domain,
                deployed_at,
                expiry,
                owner_certificate,
            })
        }
        _ => Err(v),
    }
}

/// The record's `limits`, under the bounds of a route's own: each broken
/// one as `limits: max_connections: ...`.
fn check_limits(limits: &RouteLimitsSpec, v: &mut Vec<Violation>) {
    let mut errs = crate::config::ConfigErrors::default();
    RouteLimits::validate(std::path::Path::new("app"), "app", limits, &mut errs);
    for e in errs.0 {
        let field = e.field.strip_prefix("app.limits.").unwrap_or(&e.field);
        v.push(Violation::new(
            Field::Limits,
            format!("{field}: {}", e.message),
        ));
    }
}

/// A hostname of the app: one exact DNS name, normalised.
fn hostname(h: &str, field: Field, v: &mut Vec<Violation>) -> Option<String> {
    match parse_host_pattern(h) {
        Ok(HostPattern::Exact(n)) => Some(n),
        Ok(HostPattern::Wildcard(_)) => {
            v.push(Violation::new(
                field,
                format!("`{h}`: an app's hostname is one name, not a wildcard"),
            ));
            None
        }
        Err(why) => {
            v.push(Violation::new(field, format!("`{h}`: {why}")));
            None
        }
    }
}

/// The trust scenario's own rules; returns the parsed owner certificate.
fn trust(
    record: &AppRecord,
    domain: Option<&str>,
    has_config_host: bool,
    v: &mut Vec<Violation>,
) -> Option<OwnerCertificate> {
    let origin = record.ssl_certificate_origin;
    if origin != CertOrigin::Owner && record.owner_certificate.is_some() {
        v.push(Violation::new(
            Field::OwnerCertificate,
            "only `owner` apps carry an owner certificate",
        ));
    }
    if origin != CertOrigin::Operator && record.enclave_cert_sha256.is_some() {
        v.push(Violation::new(
            Field::EnclaveCertSha256,
            "only `operator` apps are re-encrypted to a pinned enclave; passthrough relays the enclave's own TLS",
        ));
    }
    match origin {
        CertOrigin::Enclave => None,
        CertOrigin::Owner => {
            let Some(pem) = &record.owner_certificate else {
                v.push(Violation::new(
                    Field::OwnerCertificate,
                    "required with `owner`: the app's expiry may not exceed it",
                ));
                return None;
            };
            let cert = certificate::parse_chain(pem)
                .map_err(|e| v.push(Violation::new(Field::OwnerCertificate, e)))
                .ok()?;
            if let Some(d) = domain {
                if !rules::names_cover(&cert.names, d) {
                    v.push(Violation::new(
                        Field::OwnerCertificate,
                        format!(
                            "names {:?}, none of which is `{d}` or a wildcard of its parent",
                            cert.names
                        ),
                    ));
                }
            }
            Some(cert)
        }
        CertOrigin::Operator => {
            match record.enclave_cert_sha256.as_deref() {
                None => v.push(Violation::new(
                    Field::EnclaveCertSha256,
                    "required with `operator`: the proxy re-encrypts to the enclave and accepts only its certificate",
                )),
                Some(p) => {
                    if let Err(e) = parse_pin(p) {
                        v.push(Violation::new(Field::EnclaveCertSha256, e));
                    }
                }
            }
            // The configuration hostname carries the enclave's RA-TLS
            // certificate and its quote, so it is always passthrough; the
            // public one is terminated. One name cannot be both.
            if !has_config_host {
                v.push(Violation::new(
                    Field::ConfigDomainName,
                    "required with `operator`, and different from `domain_name`: the configuration hostname stays passthrough so clients can verify the enclave's quote",
                ));
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AppRecord {
        AppRecord {
            id: Uuid::from_u128(7),
            domain_name: "81152fe21315.apps.example.com".into(),
            config_domain_name: None,
            ssl_certificate_origin: CertOrigin::Enclave,
            hardware: "2g-eu-001".into(),
            expires_at: None,
            deployed_at: None,
            owner_certificate: None,
            node: "10.0.0.1:443".into(),
            enclave_cert_sha256: None,
            limits: None,
            status: Status::Running,
        }
    }

    fn key() -> AppKey {
        AppKey {
            project: "p".into(),
            name: "shop".into(),
        }
    }

    fn now() -> DateTime<Utc> {
        rules::parse_zoned("2030-01-01T00:00:00Z").unwrap()
    }

    #[test]
    fn limits_are_bounded_as_a_route_s_own() {
        let policy = AppsConfig::default();
        let ctx = Context {
            policy: &policy,
            now: now(),
            previous: None,
        };
        let mut r = record();
        r.limits = Some(RouteLimitsSpec {
            max_connections: Some(200),
            new_connections_per_second: Some(10),
            new_connections_burst: None,
        });
        assert!(validate(&key(), r.clone(), ctx).is_ok());
        r.limits = Some(RouteLimitsSpec {
            max_connections: Some(usize::MAX),
            new_connections_per_second: None,
            new_connections_burst: Some(0),
        });
        let v = validate(&key(), r, ctx).unwrap_err();
        let text: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].starts_with("limits: max_connections: ") && text[0].contains("most allowed"),
            "{text:?}"
        );
        assert!(text[1].starts_with("limits: new_connections_burst: must be at least 1"));
    }

    fn check(r: AppRecord) -> Result<App, Vec<Field>> {
        let policy = AppsConfig::default();
        let ctx = Context {
            policy: &policy,
            now: now(),
            previous: None,
        };
        validate(&key(), r, ctx).map_err(|v| v.into_iter().map(|v| v.field).collect())
    }

    #[test]
    fn a_zero_trust_record_validates_with_defaults() {
        let app = check(record()).unwrap();
        assert_eq!(app.deployed_at, now());
        assert_eq!(
            app.record.deployed_at.as_deref(),
            Some("2030-01-01T00:00:00Z")
        );
        assert_eq!(app.expiry.rule, rules::ExpiryRule::DefaultLifetime);
        assert_eq!(app.config_domain, None);
    }

    #[test]
    fn trust_scenarios_need_their_own_fields() {
        let mut r = record();
        r.ssl_certificate_origin = CertOrigin::Operator;
        assert_eq!(
            check(r.clone()).unwrap_err(),
            vec![Field::EnclaveCertSha256, Field::ConfigDomainName]
        );
        r.enclave_cert_sha256 = Some("ab".repeat(32));
        r.config_domain_name = Some("cfg.apps.example.com".into());
        assert!(check(r).is_ok());

        let mut r = record();
        r.ssl_certificate_origin = CertOrigin::Owner;
        assert_eq!(check(r).unwrap_err(), vec![Field::OwnerCertificate]);

        let mut r = record();
        r.owner_certificate = Some("x".into());
        r.enclave_cert_sha256 = Some("ab".repeat(32));
        assert_eq!(
            check(r).unwrap_err(),
            vec![Field::OwnerCertificate, Field::EnclaveCertSha256]
        );
    }

    #[test]
    fn every_field_violation_is_listed() {
        let mut r = record();
        r.id = Uuid::nil();
        r.domain_name = "*.apps.example.com".into();
        r.config_domain_name = Some("bad name".into());
        r.hardware = String::new();
        r.node = "nowhere".into();
        r.expires_at = Some("soon".into());
        r.deployed_at = Some("2030-01-01T00:00:00".into());
        let fields = check(r).unwrap_err();
        assert_eq!(
            fields,
            vec![
                Field::Id,
                Field::DomainName,
                Field::ConfigDomainName,
                Field::Hardware,
                Field::Node,
                Field::ExpiresAt,
                Field::DeployedAt,
            ]
        );
        let policy = AppsConfig::default();
        let ctx = Context {
            policy: &policy,
            now: now(),
            previous: None,
        };
        let bad_key = AppKey {
            project: String::new(),
            name: "a\nb".into(),
        };
        let v = validate(&bad_key, record(), ctx).unwrap_err();
        assert_eq!(
            v.iter().map(|v| v.field).collect::<Vec<_>>(),
            vec![Field::Project, Field::Name]
        );
    }

    #[test]
    fn a_status_update_keeps_the_deployment_clock() {
        let policy = AppsConfig::default();
        let mut r = record();
        r.hardware = "4g-eu-001".into();
        let first = validate(
            &key(),
            r.clone(),
            Context {
                policy: &policy,
                now: now(),
                previous: None,
            },
        )
        .unwrap();
        let later = now() + chrono::TimeDelta::hours(1);
        let same = validate(
            &key(),
            r.clone(),
            Context {
                policy: &policy,
                now: later,
                previous: Some(&first),
            },
        )
        .unwrap();
        assert_eq!(same.expiry.at, first.expiry.at);
        r.id = Uuid::from_u128(8);
        let redeploy = validate(
            &key(),
            r,
            Context {
                policy: &policy,
                now: later,
                previous: Some(&first),
            },
        )
        .unwrap();
        assert_eq!(redeploy.expiry.at, later + rules::FREE_HARDWARE_LIFETIME);
    }

    #[test]
    fn record_json_is_strict() {
        let ok = r#"{"id":"6f9c1a1e-0000-4000-8000-000000000001","domain_name":"a.apps.example.com",
            "ssl_certificate_origin":"self","hardware":"4g-eu-001","node":"10.0.0.1:443","status":"on_error"}"#;
        let r: AppRecord = serde_json::from_str(ok).unwrap();
        assert_eq!(r.status, Status::OnError);
        let bad = ok.replace("\"self\"", "\"everyone\"");
        assert!(serde_json::from_str::<AppRecord>(&bad).is_err());
        let extra = ok.replace("\"status\"", "\"colour\":1,\"status\"");
        let e = serde_json::from_str::<AppRecord>(&extra)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `colour`"), "{e}");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,40}",
            "[a-z0-9.*-]{0,30}(:[0-9]{0,6})?",
            "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(Z|[+-][0-9]{2}:[0-9]{2})?",
        ]
    }

    proptest! {
        /// Whatever the platform sends, validation answers; it never panics.
        #[test]
        fn any_record_is_answered(
            domain in text(), config in proptest::option::of(text()), hardware in text(),
            expires in proptest::option::of(text()), deployed in proptest::option::of(text()),
            node in text(), pin in proptest::option::of(text()), pem in proptest::option::of(text()),
            origin in 0u8..3, project in text(), name in text(),
        ) {
            let record = AppRecord {
                id: Uuid::from_u128(1),
                domain_name: domain,
                config_domain_name: config,
                ssl_certificate_origin: [CertOrigin::Enclave, CertOrigin::Owner, CertOrigin::Operator][origin as usize],
                hardware,
                expires_at: expires,
                deployed_at: deployed,
                owner_certificate: pem,
                node,
                enclave_cert_sha256: pin,
                limits: None,
                status: Status::Running,
            };
            let policy = AppsConfig::default();
            let ctx = Context { policy: &policy, now: Utc::now(), previous: None };
            let _ = validate(&AppKey { project, name }, record, ctx);
        }
    }
}
