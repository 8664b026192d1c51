//! The verdict on one custom domain, which the CNAME check and the
//! ownership proof (`super::ownership`) both give and which is stored and
//! rechecked as one. Its own file so that neither check imports the other.

use serde::{Deserialize, Serialize};

/// What is known of one custom hostname: its CNAME, then its proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "detail", rename_all = "snake_case")]
pub enum CnameState {
    /// The CNAME (chain) reaches the ingress hostname.
    Ok,
    /// The DNS answered, and not with a CNAME to the ingress.
    Wrong(String),
    /// The DNS did not answer; nothing is known.
    Unverified(String),
}
