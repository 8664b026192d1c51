//! Proof that a custom domain's owner means it for this project. A CNAME to
//! the ingress only says a name points here: anyone can register an app
//! claiming someone else's custom domain, or one an expired app left
//! behind with its CNAME still in place. So the domain must also publish
//! a TXT record `_mse-challenge.<domain>` holding [`txt_value`] of the
//! app's project; only who controls the domain's zone can write it, and
//! another project's value does not fit this one.
//!
//! The value is public and derived, not a secret: the tenant computes it
//! (README, "Custom domains"; `mse-proxy app plan` prints it):
//!
//! ```text
//! printf 'mse-challenge:%s' "$PROJECT" | sha256sum
//! ```
//!
//! The project is the `{project}` of `PUT /apps/{project}/{name}` (`[cloud]
//! project` in `mse.toml`). Checked through the proxy's resolver with the
//! CNAME, at registration and at every recheck (`crate::apps::cname`).

use serde::Serialize;

use super::verdict::CnameState;
use crate::dns::Dns;

/// The label under the custom domain that holds the proof.
pub const LABEL: &str = "_mse-challenge";

/// What is hashed before the project: versions the derivation, and keeps
/// the value from equalling a hash of the bare project name used elsewhere.
const PREFIX: &str = "mse-challenge:";

/// The TXT record's name for `domain`.
pub fn txt_name(domain: &str) -> String {
    format!("{LABEL}.{}", domain.trim_end_matches('.'))
}

/// The TXT record's value for `project`: lowercase hex of
/// SHA-256(`mse-challenge:` + project), 64 characters.
pub fn txt_value(project: &str) -> String {
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{PREFIX}{project}").as_bytes(),
    );
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The record a tenant must publish for `domain` under `project`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Proof {
    pub domain: String,
    pub txt_name: String,
    pub txt_value: String,
}

impl Proof {
    pub fn new(domain: &str, project: &str) -> Self {
        Self {
            domain: domain.to_string(),
            txt_name: txt_name(domain),
            txt_value: txt_value(project),
        }
    }
}

impl std::fmt::Display for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a TXT record `{}` holding `{}`",
            self.txt_name, self.txt_value
        )
    }
}

/// The verdict on `records` (the TXT strings found) for `proof`: any one
/// record equal to the value proves it, so a domain moving between
/// projects may hold both values for a while. Surrounding whitespace and
/// case are forgiven (zone editors add them); nothing else is.
pub fn judge(proof: &Proof, records: &[String]) -> CnameState {
    if records
        .iter()
        .any(|r| r.trim().eq_ignore_ascii_case(&proof.txt_value))
    {
        return CnameState::Ok;
    }
    let found = if records.is_empty() {
        "there is no TXT record".to_string()
    } else {
        format!(
            "its TXT records hold other values ({} record(s); another project's proof is not this one's)",
            records.len()
        )
    };
    CnameState::Wrong(format!(
        "`{}` is not proven for this project: it needs {proof}; {found}",
        proof.domain
    ))
}

/// Looks the proof of `domain` for `project` up. No answer from the DNS is
/// [`CnameState::Unverified`], which a recheck does not take for a "no".
pub async fn check(dns: &Dns, domain: &str, project: &str) -> CnameState {
    let proof = Proof::new(domain, project);
    match dns.txt(&proof.txt_name).await {
        Ok(records) => judge(&proof, &records),
        Err(e) => CnameState::Unverified(format!("the TXT lookup of `{}`: {e}", proof.txt_name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_is_the_documented_hash_of_the_project() {
        // printf 'mse-challenge:%s' p | sha256sum
        assert_eq!(
            txt_value("p"),
            "ded338d45f7c4d66f9c29fa177e2e15007326b5950f6551681ba1f9491e4c06b"
        );
        assert_eq!(txt_value("p").len(), 64);
        assert_ne!(txt_value("p"), txt_value("q"));
        assert_eq!(
            txt_name("shop.customer.test."),
            "_mse-challenge.shop.customer.test"
        );
    }

    #[test]
    fn only_this_projects_value_proves_the_domain() {
        let proof = Proof::new("shop.customer.test", "p");
        let mine = txt_value("p");
        let theirs = txt_value("q");
        assert_eq!(
            judge(&proof, &[format!(" {} ", mine.to_uppercase())]),
            CnameState::Ok
        );
        assert_eq!(
            judge(&proof, &[theirs.clone(), mine.clone()]),
            CnameState::Ok
        );
        let CnameState::Wrong(why) = judge(&proof, &[theirs]) else {
            panic!("another project's value must not prove it");
        };
        assert!(why.contains("_mse-challenge.shop.customer.test"), "{why}");
        assert!(why.contains(&mine), "{why}");
        assert!(why.contains("other values"), "{why}");
        let CnameState::Wrong(why) = judge(&proof, &[]) else {
            panic!("no record proves nothing");
        };
        assert!(why.contains("there is no TXT record"), "{why}");
    }
}
