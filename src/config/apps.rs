//! The `[apps]` section of the static config: the platform's policy for app
//! records (see `crate::apps`). Raw serde shape in, validated
//! [`AppsConfig`] out; every error names the file and the field.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigErrors;
use crate::host::parse_host_pattern;
use crate::host::HostPattern;

/// What a failed custom-domain CNAME check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CnamePolicy {
    /// Refuse the app at registration; withdraw its route when a later check
    /// finds the CNAME gone, restore it when the CNAME is back.
    Enforce,
    /// Route anyway, and log.
    Warn,
    /// Do not look.
    Off,
}

impl CnamePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            CnamePolicy::Enforce => "enforce",
            CnamePolicy::Warn => "warn",
            CnamePolicy::Off => "off",
        }
    }
}

/// The validated `[apps]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppsConfig {
    /// Hardware names that live at most 4 hours (the platform's free tier).
    pub free_hardware: Vec<String>,
    /// Lifetime of an app that asks for no expiry and has no owner
    /// certificate; `None`: one calendar year after deployment.
    pub default_lifetime: Option<Duration>,
    /// Route the configuration hostname while an app is `spawning` or
    /// `initializing` (its secrets are sent through it).
    pub route_config_host_while_initializing: bool,
    /// The platform's own app domains (lowercase, no trailing dot): a host
    /// equal to or under one of them needs no CNAME.
    pub platform_domains: Vec<String>,
    /// The ingress host custom domains must CNAME to.
    pub ingress_hostname: Option<String>,
    pub cname_policy: CnamePolicy,
    /// How often custom-domain CNAMEs are checked again.
    pub cname_recheck: Duration,
}

impl Default for AppsConfig {
    fn default() -> Self {
        Self {
            free_hardware: vec![DEFAULT_FREE_HARDWARE.into()],
            default_lifetime: None,
            route_config_host_while_initializing: true,
            platform_domains: Vec::new(),
            ingress_hostname: None,
            cname_policy: CnamePolicy::Off,
            cname_recheck: Duration::from_secs(600),
        }
    }
}

impl AppsConfig {
    /// Whether `host` (normalised) is one of the platform's own names.
    pub fn is_platform_host(&self, host: &str) -> bool {
        self.platform_domains.iter().any(|d| {
            host == d
                || host
                    .strip_suffix(d.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        })
    }
}

/// The platform's one free hardware (mse-app-config.md, "Expiry rules").
pub const DEFAULT_FREE_HARDWARE: &str = "4g-eu-001";

/// `[apps]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawApps {
    pub free_hardware: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub default_lifetime: Option<Duration>,
    pub route_config_host_while_initializing: bool,
    pub platform_domains: Vec<String>,
    pub ingress_hostname: Option<String>,
    /// `enforce`, `warn` or `off`; default `enforce` when `ingress_hostname`
    /// is set, else `off` (nothing to check against).
    pub cname_policy: Option<String>,
    #[serde(with = "humantime_serde")]
    pub cname_recheck: Duration,
}

impl Default for RawApps {
    fn default() -> Self {
        let d = AppsConfig::default();
        Self {
            free_hardware: d.free_hardware,
            default_lifetime: None,
            route_config_host_while_initializing: d.route_config_host_while_initializing,
            platform_domains: Vec::new(),
            ingress_hostname: None,
            cname_policy: None,
            cname_recheck: d.cname_recheck,
        }
    }
}

/// Validates `[apps]`; errors go to `errs`, named `apps.FIELD`.
pub(crate) fn validate(path: &Path, raw: RawApps, errs: &mut ConfigErrors) -> AppsConfig {
    for (i, h) in raw.free_hardware.iter().enumerate() {
        if !(1..=16).contains(&h.chars().count()) {
            errs.push(
                path,
                format!("apps.free_hardware[{i}]"),
                format!("`{h}`: a hardware name is 1-16 characters"),
            );
        }
    }
    if raw.default_lifetime.is_some_and(|d| d.is_zero()) {
        errs.push(path, "apps.default_lifetime", "must be greater than zero");
    }
    let mut platform_domains = Vec::new();
    for (i, d) in raw.platform_domains.iter().enumerate() {
        match parse_host_pattern(d) {
            Ok(HostPattern::Exact(n)) => platform_domains.push(n),
            Ok(HostPattern::Wildcard(_)) => errs.push(
                path,
                format!("apps.platform_domains[{i}]"),
                format!("`{d}`: give the domain itself; every name under it is included"),
            ),
            Err(why) => errs.push(
                path,
                format!("apps.platform_domains[{i}]"),
                format!("`{d}`: {why}"),
            ),
        }
    }
    let ingress_hostname =
        raw.ingress_hostname
            .as_deref()
            .and_then(|h| match parse_host_pattern(h) {
                Ok(HostPattern::Exact(n)) => Some(n),
                Ok(HostPattern::Wildcard(_)) => {
                    errs.push(
                        path,
                        "apps.ingress_hostname",
                        format!("`{h}`: a CNAME target is one name, not a wildcard"),
                    );
                    None
                }
                Err(why) => {
                    errs.push(path, "apps.ingress_hostname", format!("`{h}`: {why}"));
                    None
                }
            });
    let cname_policy = match (raw.cname_policy.as_deref(), &raw.ingress_hostname) {
        (None, Some(_)) | (Some("enforce"), _) => CnamePolicy::Enforce,
        (None, None) | (Some("off"), _) => CnamePolicy::Off,
        (Some("warn"), _) => CnamePolicy::Warn,
        (Some(other), _) => {
            errs.push(
                path,
                "apps.cname_policy",
                format!("`{other}` is not one of `enforce`, `warn`, `off`"),
            );
            CnamePolicy::Off
        }
    };
    if cname_policy != CnamePolicy::Off && raw.ingress_hostname.is_none() {
        errs.push(
            path,
            "apps.ingress_hostname",
            format!(
                "required with cname_policy = \"{}\": custom domains must CNAME to it",
                cname_policy.as_str()
            ),
        );
    }
    super::bounds::check(path, "apps.cname_recheck", raw.cname_recheck, errs);
    if raw.cname_recheck.is_zero() {
        errs.push(path, "apps.cname_recheck", "must be greater than zero");
    }
    AppsConfig {
        free_hardware: raw.free_hardware,
        default_lifetime: raw.default_lifetime,
        route_config_host_while_initializing: raw.route_config_host_while_initializing,
        platform_domains,
        ingress_hostname,
        cname_policy,
        cname_recheck: raw.cname_recheck,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<AppsConfig, ConfigErrors> {
        let raw: RawApps = toml::from_str(text).unwrap();
        let mut errs = ConfigErrors::default();
        let c = validate(Path::new("p.toml"), raw, &mut errs);
        errs.into_result(c)
    }

    #[test]
    fn defaults_follow_the_platform_docs() {
        let c = load("").unwrap();
        assert_eq!(c.free_hardware, vec!["4g-eu-001"]);
        assert_eq!(c.default_lifetime, None);
        assert!(c.route_config_host_while_initializing);
        assert_eq!(c.cname_policy, CnamePolicy::Off);
        assert_eq!(c.cname_recheck, Duration::from_secs(600));
        let c = load("ingress_hostname = \"Proxy.MSE.example.com.\"").unwrap();
        assert_eq!(c.cname_policy, CnamePolicy::Enforce);
        assert_eq!(c.ingress_hostname.as_deref(), Some("proxy.mse.example.com"));
    }

    #[test]
    fn platform_hosts_are_the_domains_and_names_under_them() {
        let c = load("platform_domains = [\"apps.example.com\"]").unwrap();
        assert!(c.is_platform_host("apps.example.com"));
        assert!(c.is_platform_host("81152fe21315.apps.example.com"));
        assert!(!c.is_platform_host("evilapps.example.com"));
        assert!(!c.is_platform_host("shop.customer.com"));
    }

    #[test]
    fn every_field_error_is_named() {
        let e = load(
            "free_hardware = [\"\"]\ndefault_lifetime = \"0s\"\nplatform_domains = [\"*.a.com\", \"b c\"]\n\
             cname_policy = \"warn\"\ncname_recheck = \"0s\"\n",
        )
        .unwrap_err()
        .to_string();
        for f in [
            "apps.free_hardware[0]",
            "apps.default_lifetime",
            "apps.platform_domains[0]",
            "apps.platform_domains[1]",
            "apps.ingress_hostname",
            "apps.cname_recheck",
        ] {
            assert!(e.contains(&format!("p.toml: {f}: ")), "{f} missing:\n{e}");
        }
        let e = load("cname_policy = \"sometimes\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("apps.cname_policy"), "{e}");
    }
}
