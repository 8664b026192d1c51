//! Custom domains: "A custom domain is pointed at the ingress with a DNS
//! CNAME record to the ingress hostname, which must resolve before
//! deployment" (mse-app-config.md, "Hostnames"). An app hostname outside
//! `apps.platform_domains` is checked through the proxy's own resolver
//! (`[dns]`) when the app is registered, and again every
//! `apps.cname_recheck`; `apps.cname_policy` says what a failed check does.
//!
//! A check has three answers, and only two are verdicts: the DNS says the
//! CNAME reaches the ingress, or it says something else (no CNAME, no such
//! name, a CNAME elsewhere). When it says nothing (timeout, SERVFAIL), the
//! registration is refused under `enforce` (the rule is "must resolve"), but
//! a later recheck keeps the last verdict: a DNS outage must not withdraw
//! every custom domain at once.
//!
//! A verdict covers the ownership proof too (`super::ownership`): a
//! custom domain is [`CnameState::Ok`] only when its CNAME reaches the
//! ingress *and* its `_mse-challenge` TXT record holds the app's project
//! value; a missing or foreign proof is [`CnameState::Wrong`], and the
//! policy treats it as a wrong CNAME (refused, withdrawn, restored).

use std::collections::BTreeMap;

use crate::config::apps::{AppsConfig, CnamePolicy};
use crate::dns::Dns;

/// CNAME hops followed before giving up (a chain through a CDN is 2 or 3).
const MAX_HOPS: usize = 8;

pub use super::verdict::CnameState;

/// Per hostname.
pub type CnameStates = BTreeMap<String, CnameState>;

/// The hostnames among `hosts` that must CNAME to the ingress: those outside
/// the platform's domains, unless the policy is `off`.
pub fn custom_hosts<'a>(cfg: &AppsConfig, hosts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    if cfg.cname_policy == CnamePolicy::Off || cfg.ingress_hostname.is_none() {
        return Vec::new();
    }
    hosts
        .into_iter()
        .filter(|h| !cfg.is_platform_host(h))
        .map(str::to_string)
        .collect()
}

/// Follows the CNAMEs of `host` and says whether they reach `ingress`.
pub async fn check(dns: &Dns, host: &str, ingress: &str) -> CnameState {
    let mut name = host.to_string();
    for _ in 0..MAX_HOPS {
        match dns.cname(&name).await {
            Ok(Some(target)) if target == ingress => return CnameState::Ok,
            Ok(Some(target)) => name = target,
            Ok(None) if name == host => {
                return CnameState::Wrong(format!("`{host}` has no CNAME record"))
            }
            Ok(None) => {
                return CnameState::Wrong(format!(
                    "the CNAME chain of `{host}` ends at `{name}`, not `{ingress}`"
                ))
            }
            Err(e) => return CnameState::Unverified(e.to_string()),
        }
    }
    CnameState::Wrong(format!(
        "the CNAME chain of `{host}` is longer than {MAX_HOPS}"
    ))
}

/// Checks every hostname in `hosts` (see [`custom_hosts`]) of an app of
/// `project`: its CNAME, then, if that reaches the ingress, its ownership
/// proof.
pub async fn check_all(
    dns: &Dns,
    cfg: &AppsConfig,
    project: &str,
    hosts: &[String],
) -> CnameStates {
    let mut out = CnameStates::new();
    let Some(ingress) = cfg.ingress_hostname.as_deref() else {
        return out;
    };
    for h in hosts {
        let state = match check(dns, h, ingress).await {
            CnameState::Ok => super::ownership::check(dns, h, project).await,
            other => other,
        };
        out.insert(h.clone(), state);
    }
    out
}

/// A recheck's states folded into the last known ones: a verdict replaces,
/// an unanswered lookup keeps what was known.
pub fn fold(known: &CnameStates, fresh: CnameStates) -> CnameStates {
    fresh
        .into_iter()
        .map(|(host, state)| {
            let state = match (state, known.get(&host)) {
                (CnameState::Unverified(_), Some(k)) => k.clone(),
                (s, _) => s,
            };
            (host, state)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unanswered_recheck_keeps_the_last_verdict() {
        let known = CnameStates::from([
            ("a.test".to_string(), CnameState::Ok),
            ("b.test".to_string(), CnameState::Wrong("gone".into())),
        ]);
        let fresh = CnameStates::from([
            (
                "a.test".to_string(),
                CnameState::Unverified("timeout".into()),
            ),
            ("b.test".to_string(), CnameState::Ok),
            (
                "c.test".to_string(),
                CnameState::Unverified("timeout".into()),
            ),
        ]);
        let folded = fold(&known, fresh);
        assert_eq!(folded["a.test"], CnameState::Ok);
        assert_eq!(folded["b.test"], CnameState::Ok);
        assert!(matches!(folded["c.test"], CnameState::Unverified(_)));
    }

    #[test]
    fn only_hosts_outside_the_platform_domains_need_a_cname() {
        let mut cfg = AppsConfig {
            platform_domains: vec!["apps.example.com".into()],
            ingress_hostname: Some("proxy.mse.example.com".into()),
            cname_policy: CnamePolicy::Enforce,
            ..AppsConfig::default()
        };
        let hosts = ["x.apps.example.com", "shop.customer.com"];
        assert_eq!(custom_hosts(&cfg, hosts), vec!["shop.customer.com"]);
        cfg.cname_policy = CnamePolicy::Off;
        assert!(custom_hosts(&cfg, hosts).is_empty());
    }
}
