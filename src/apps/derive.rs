//! From an app to its routes.
//!
//! An app yields up to two routes, both to its node:
//! - `app.{project}.{name}`: the public hostname, passthrough (`self`,
//!   `owner`) or terminate with the platform's certificate and a pinned TLS
//!   connection to the enclave (`operator`);
//! - `app.{project}.{name}.config`: the configuration hostname when it
//!   differs, always passthrough (it serves the enclave's RA-TLS certificate,
//!   whose quote a client verifies through the proxy).
//!
//! Two routes rather than one with two hosts, for two reasons. The two
//! hostnames can need different modes (operator apps). And the status moves
//! them separately: an initializing app routes only its configuration
//! hostname, and when it turns `running` the public route is *added* while
//! the configuration route stays the same value, so the reconciler leaves its
//! connections (a secrets upload in flight) alone. One route whose host list
//! grew would count as changed and have its connections closed.

use std::collections::BTreeSet;
use std::path::Path;

use crate::config::apps::AppsConfig;
use crate::config::routes::{self, RouteSpec};
use crate::config::terminate::UpstreamSpec;
use crate::config::ConfigErrors;
use crate::routing::route::{AppMeta, Route};

use super::record::{App, AppKey, CertOrigin};
use super::rules;

/// Where app-derived routes are said to come from in error messages.
pub const SOURCE: &str = "admin API";

/// The longest `{project}.{name}` kept readable in a route name: route
/// names are at most 128 characters, and `app.`, `.` and `.config` take 12.
const READABLE_MAX: usize = 116;

/// The name of an app's public route; its configuration route adds
/// `.config`. `app.{project}.{name}` when both are made of letters, digits,
/// `_` and `-` and fit; otherwise (the docs allow any 1-255 characters)
/// `apph.` and 32 hex digits of a SHA-256 of the pair. Injective either way:
/// readable names have exactly three dot-separated parts before any
/// `.config`, and the two forms start differently.
pub fn route_name(key: &AppKey) -> String {
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if plain(&key.project) && plain(&key.name) && key.project.len() + key.name.len() <= READABLE_MAX
    {
        return format!("app.{}.{}", key.project, key.name);
    }
    // Length-prefixed so that ("ab", "c") and ("a", "bc") differ.
    let mut bytes = (key.project.len() as u64).to_be_bytes().to_vec();
    bytes.extend_from_slice(key.project.as_bytes());
    bytes.extend_from_slice(key.name.as_bytes());
    let digest = sha256_hex(&bytes);
    format!("apph.{}", &digest[..32])
}

/// The route specs an app yields now, given its status and the hostnames
/// withdrawn because their CNAME no longer points at the ingress.
pub fn specs(app: &App, policy: &AppsConfig, withdrawn: &BTreeSet<String>) -> Vec<RouteSpec> {
    let routed = rules::routed(app.record.status, policy);
    let name = route_name(&app.key);
    let backends = [app.record.node.as_str()];
    let meta = AppMeta {
        project: Some(app.key.project.clone()),
        name: Some(app.key.name.clone()),
        hardware: Some(app.record.hardware.clone()),
    };
    let stamp = |mut s: RouteSpec| {
        s.expires_at = Some(rules::stamp(app.expiry.at));
        s.app = Some(meta.clone());
        // Each of the app's routes gets the record's limits as its own.
        s.limits = app.record.limits.clone();
        s
    };
    let mut out = Vec::with_capacity(2);
    let public = app.domain.as_str();
    match &app.config_domain {
        Some(config) => {
            // Operator apps always have this second hostname (validation
            // requires it), so the public route below may terminate.
            if routed.config && !withdrawn.contains(config) {
                out.push(stamp(RouteSpec::passthrough(
                    &format!("{name}.config"),
                    &[config.as_str()],
                    &backends,
                )));
            }
            if routed.public && !withdrawn.contains(public) {
                out.push(stamp(public_spec(app, &name, &backends)));
            }
        }
        // One hostname serves as both: it routes whenever either would.
        None => {
            if (routed.public || routed.config) && !withdrawn.contains(public) {
                out.push(stamp(public_spec(app, &name, &backends)));
            }
        }
    }
    out
}

fn public_spec(app: &App, name: &str, backends: &[&str]) -> RouteSpec {
    let hosts = [app.domain.as_str()];
    match app.record.ssl_certificate_origin {
        CertOrigin::Enclave | CertOrigin::Owner => RouteSpec::passthrough(name, &hosts, backends),
        CertOrigin::Operator => RouteSpec::terminate(
            name,
            &hosts,
            backends,
            UpstreamSpec {
                pin_sha256: app.record.enclave_cert_sha256.clone(),
                ..UpstreamSpec::default()
            },
        ),
    }
}

/// Validates derived specs into routes, as any route is.
pub fn routes(app: &App, specs: &[RouteSpec]) -> Result<Vec<Route>, ConfigErrors> {
    let mut errs = ConfigErrors::default();
    let mut out = Vec::with_capacity(specs.len());
    // A derived route has at most two hosts and one backend: the default
    // caps never bind, whatever `[limits]` says.
    let limits = crate::config::ControlLimits::default();
    for s in specs {
        match routes::validate_one(Path::new(SOURCE), &format!("app `{}`", app.key), s, &limits) {
            Ok(r) => out.push(r),
            Err(e) => errs.0.extend(e.0),
        }
    }
    errs.into_result(out)
}

/// Hex SHA-256 of some bytes (certificate fingerprints).
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::record::{validate, AppRecord, Context};
    use crate::apps::rules::Status;
    use crate::routing::Mode;

    fn key(p: &str, n: &str) -> AppKey {
        AppKey {
            project: p.into(),
            name: n.into(),
        }
    }

    #[test]
    fn route_names_are_readable_when_possible_and_never_collide() {
        assert_eq!(route_name(&key("p1", "shop")), "app.p1.shop");
        let a = route_name(&key("a.b", "c"));
        let b = route_name(&key("a", "b.c"));
        assert!(a.starts_with("apph.") && b.starts_with("apph."));
        assert_ne!(a, b);
        assert_ne!(route_name(&key("ab", "c d")), route_name(&key("a", "bc d")));
        let long = route_name(&key(&"p".repeat(200), "n"));
        assert_eq!(long.len(), 37);
        for k in [
            key("my project", "app"),
            key(&"x".repeat(255), &"y".repeat(255)),
        ] {
            let n = route_name(&k);
            let spec = RouteSpec::passthrough(
                &format!("{n}.config"),
                &["a.example.com"],
                &["127.0.0.1:1"],
            );
            assert!(
                routes::validate_one(
                    Path::new("t"),
                    "t",
                    &spec,
                    &crate::config::ControlLimits::default()
                )
                .is_ok(),
                "{n}"
            );
        }
    }

    fn app(origin: CertOrigin, status: Status, config: Option<&str>) -> App {
        let policy = AppsConfig::default();
        let record = AppRecord {
            id: uuid::Uuid::from_u128(1),
            domain_name: "shop.apps.example.com".into(),
            config_domain_name: config.map(Into::into),
            ssl_certificate_origin: origin,
            hardware: "2g-eu-001".into(),
            expires_at: None,
            deployed_at: None,
            owner_certificate: None,
            node: "10.0.0.1:443".into(),
            enclave_cert_sha256: (origin == CertOrigin::Operator).then(|| "ab".repeat(32)),
            limits: None,
            status,
        };
        let ctx = Context {
            policy: &policy,
            now: chrono::Utc::now(),
            previous: None,
        };
        validate(&key("p", "shop"), record, ctx).unwrap()
    }

    fn derived(a: &App) -> Vec<(String, Vec<String>, Mode)> {
        let none = BTreeSet::new();
        let specs = specs(a, &AppsConfig::default(), &none);
        routes(a, &specs)
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    r.name,
                    r.hosts.iter().map(ToString::to_string).collect(),
                    r.mode,
                )
            })
            .collect()
    }

    #[test]
    fn hostnames_modes_and_status() {
        use Mode::*;
        let cfg = Some("cfg.apps.example.com");
        let both = |m| {
            vec![
                (
                    "app.p.shop.config".to_string(),
                    vec!["cfg.apps.example.com".to_string()],
                    Passthrough,
                ),
                (
                    "app.p.shop".to_string(),
                    vec!["shop.apps.example.com".to_string()],
                    m,
                ),
            ]
        };
        assert_eq!(
            derived(&app(CertOrigin::Enclave, Status::Running, cfg)),
            both(Passthrough)
        );
        assert_eq!(
            derived(&app(CertOrigin::Operator, Status::Running, cfg)),
            both(Terminate)
        );
        assert_eq!(
            derived(&app(CertOrigin::Operator, Status::Initializing, cfg)),
            both(Terminate)[..1].to_vec()
        );
        let single = vec![(
            "app.p.shop".to_string(),
            vec!["shop.apps.example.com".to_string()],
            Passthrough,
        )];
        assert_eq!(
            derived(&app(CertOrigin::Enclave, Status::Spawning, None)),
            single
        );
        assert_eq!(
            derived(&app(CertOrigin::Enclave, Status::Running, None)),
            single
        );
        assert!(derived(&app(CertOrigin::Enclave, Status::Stopped, cfg)).is_empty());
        assert!(derived(&app(CertOrigin::Enclave, Status::OnError, None)).is_empty());
    }

    #[test]
    fn every_route_of_an_app_gets_its_record_s_limits() {
        let mut a = app(
            CertOrigin::Enclave,
            Status::Running,
            Some("cfg.apps.example.com"),
        );
        let limits = crate::config::route_limits::RouteLimitsSpec {
            max_connections: Some(20),
            new_connections_per_second: Some(5),
            new_connections_burst: None,
        };
        a.record.limits = Some(limits.clone());
        let s = specs(&a, &AppsConfig::default(), &BTreeSet::new());
        assert_eq!(s.len(), 2);
        for r in routes(&a, &s).unwrap() {
            assert_eq!(r.limits.max_connections, Some(20), "{}", r.name);
            assert_eq!(r.limits.per_second, Some(5));
            assert_eq!(r.spec.limits.as_ref(), Some(&limits));
        }
    }

    #[test]
    fn a_withdrawn_hostname_loses_only_its_route() {
        let a = app(
            CertOrigin::Enclave,
            Status::Running,
            Some("cfg.apps.example.com"),
        );
        let gone = BTreeSet::from(["shop.apps.example.com".to_string()]);
        let s = specs(&a, &AppsConfig::default(), &gone);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "app.p.shop.config");
        assert_eq!(
            s[0].expires_at.as_deref(),
            Some(rules::stamp(a.expiry.at).as_str())
        );
        assert_eq!(
            s[0].app.as_ref().unwrap().hardware.as_deref(),
            Some("2g-eu-001")
        );
    }
}
