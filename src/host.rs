//! Host names as routes, certificates and the ClientHello parser see
//! them: one normalisation (lowercase, no trailing dot, as lookups treat
//! the SNI), one syntax check and one pattern type. A leaf: it imports
//! nothing from the crate, so config, routing, tls and apps all use the
//! same rules.

use std::fmt;

/// A host a route claims, normalised (lowercase, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Exactly this name.
    Exact(String),
    /// `*.suffix`: any name with exactly one more label in front of `suffix`,
    /// as certificate wildcards match. Holds `suffix` without the `*.`.
    Wildcard(String),
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

/// Lowercases and strips one trailing dot, as lookups do with the SNI.
pub fn normalize_host(h: &str) -> String {
    h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase()
}

/// Parses `name` or `*.suffix` into a [`HostPattern`].
pub fn parse_host_pattern(h: &str) -> Result<HostPattern, String> {
    let n = normalize_host(h);
    if let Some(suffix) = n.strip_prefix("*.") {
        check_hostname(suffix)?;
        Ok(HostPattern::Wildcard(suffix.to_string()))
    } else if n.contains('*') {
        Err("a wildcard may only be a whole first label, as in `*.example.com`".into())
    } else {
        check_hostname(&n)?;
        Ok(HostPattern::Exact(n))
    }
}

/// DNS name syntax, lenient on `_` (seen in real names).
pub fn check_hostname(n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > MAX_HOST_NAME_LEN {
        return Err("a host name must be 1-253 characters".into());
    }
    for label in n.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each label must be 1-63 characters".into());
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("only letters, digits, `-` and `_` are allowed in labels".into());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label may not start or end with `-`".into());
        }
    }
    Ok(())
}

/// Longest DNS name in presentation form without the trailing dot.
const MAX_HOST_NAME_LEN: usize = 253;

/// Validates an SNI host_name and returns it lowercased without its trailing dot.
///
/// The name becomes a routing key and appears in logs, so only DNS-name characters are let
/// through: letters, digits, `-`, `.` and `_` (not valid in host names, but real services use
/// it). Empty labels (a leading dot or `..`) are refused so that `a..b` or `.b` can never look
/// like a suffix match of a routed name.
pub fn normalize_sni(name: &[u8]) -> Result<String, &'static str> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() {
        return Err("empty SNI host_name");
    }
    if name.len() > MAX_HOST_NAME_LEN {
        return Err("SNI host_name too long");
    }
    if !name
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
    {
        return Err("invalid character in SNI host_name");
    }
    if name.first() == Some(&b'.')
        || name.last() == Some(&b'.')
        || name.windows(2).any(|w| w == b"..")
    {
        return Err("empty label in SNI host_name");
    }
    // All bytes are ASCII, so this cannot fail; map rather than unwrap to stay panic-free.
    String::from_utf8(name.to_ascii_lowercase()).map_err(|_| "invalid character in SNI host_name")
}
