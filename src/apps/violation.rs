//! A broken app rule, named by the field it is about. The same rules serve
//! the admin API (fields of the JSON record) and `mse-proxy app plan`
//! (fields of `mse.toml` and the command line), so a violation carries a
//! [`Field`] and each caller spells it in its own terms.

use std::fmt;

/// The app record's fields, as the rules see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Project,
    Name,
    Id,
    DomainName,
    ConfigDomainName,
    SslCertificateOrigin,
    Hardware,
    ExpiresAt,
    DeployedAt,
    OwnerCertificate,
    Node,
    EnclaveCertSha256,
    Status,
    Limits,
}

impl Field {
    /// The key in the JSON record (`project` and `name` are the URL's).
    pub fn record_key(self) -> &'static str {
        match self {
            Field::Project => "project",
            Field::Name => "name",
            Field::Id => "id",
            Field::DomainName => "domain_name",
            Field::ConfigDomainName => "config_domain_name",
            Field::SslCertificateOrigin => "ssl_certificate_origin",
            Field::Hardware => "hardware",
            Field::ExpiresAt => "expires_at",
            Field::DeployedAt => "deployed_at",
            Field::OwnerCertificate => "owner_certificate",
            Field::Node => "node",
            Field::EnclaveCertSha256 => "enclave_cert_sha256",
            Field::Status => "status",
            Field::Limits => "limits",
        }
    }
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: Field,
    pub message: String,
}

impl Violation {
    pub fn new(field: Field, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field.record_key(), self.message)
    }
}
