//! How a connection ended: one closed set of outcomes, each counted and
//! logged under a stable name.

use std::fmt;

/// The outcome of one accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Relayed until one side closed.
    Ok,
    /// The SNI matched no route.
    UnknownSni,
    /// No SNI and no `no_sni_route`.
    NoSni,
    /// The first bytes were not a TLS handshake.
    NotTls,
    /// TLS framing with an invalid ClientHello, or one over the size cap.
    BadHello,
    /// The client closed before sending a whole ClientHello.
    ClientClosed,
    /// No whole ClientHello before the deadline (on a terminate route: no
    /// finished TLS handshake before that same deadline).
    HelloTimeout,
    /// Terminate: the client's TLS handshake with the proxy failed.
    ClientTlsError,
    /// Every backend refused, timed out or failed to resolve.
    UpstreamConnectError,
    /// Terminate: the TLS handshake with the backend failed (certificate
    /// not the pinned one, bad chain, no common protocol, timeout).
    UpstreamTlsError,
    /// An I/O error while relaying (reset on either side).
    RelayError,
    /// No byte either way for the idle timeout.
    Idle,
    /// The connection limit was reached at accept.
    Limit,
    /// The route had expired (at lookup, or while relaying).
    Expired,
    /// The route was removed or redeployed while the connection was open.
    RouteRemoved,
    /// The proxy shut down before the connection finished.
    Shutdown,
}

impl Outcome {
    /// Every outcome, for pre-registering metric label values.
    pub const ALL: [Outcome; 16] = [
        Outcome::Ok,
        Outcome::UnknownSni,
        Outcome::NoSni,
        Outcome::NotTls,
        Outcome::BadHello,
        Outcome::ClientClosed,
        Outcome::HelloTimeout,
        Outcome::ClientTlsError,
        Outcome::UpstreamConnectError,
        Outcome::UpstreamTlsError,
        Outcome::RelayError,
        Outcome::Idle,
        Outcome::Limit,
        Outcome::Expired,
        Outcome::RouteRemoved,
        Outcome::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::UnknownSni => "unknown_sni",
            Outcome::NoSni => "no_sni",
            Outcome::NotTls => "not_tls",
            Outcome::BadHello => "bad_hello",
            Outcome::ClientClosed => "client_closed",
            Outcome::HelloTimeout => "hello_timeout",
            Outcome::ClientTlsError => "client_tls_error",
            Outcome::UpstreamConnectError => "upstream_connect_error",
            Outcome::UpstreamTlsError => "upstream_tls_error",
            Outcome::RelayError => "relay_error",
            Outcome::Idle => "idle_timeout",
            Outcome::Limit => "limit",
            Outcome::Expired => "expired",
            Outcome::RouteRemoved => "route_removed",
            Outcome::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_is_listed_once_with_a_distinct_name() {
        let mut names: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Outcome::ALL.len());
        assert!(names.contains(&"client_tls_error"));
        assert!(names.contains(&"upstream_tls_error"));
    }
}
