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
    /// Every backend refused the connection.
    UpstreamRefused,
    /// Every backend connect timed out (black-holed).
    UpstreamTimeout,
    /// The backend names do not resolve (NXDOMAIN, no address).
    DnsError,
    /// The DNS server did not answer (and no stale answer was young enough).
    DnsUnavailable,
    /// The backend names resolve only to addresses the proxy refuses
    /// (loopback, link-local, the admin listener..., see
    /// `crate::dns::screen`) and no allow-list names them. The DNS's or the
    /// route's fault, not the backend's: nothing was connected to.
    BackendAddressRefused,
    /// Every backend failed, for mixed or other reasons.
    UpstreamConnectError,
    /// Terminate: the client offered application protocols (ALPN) and
    /// neither the route nor the backend accepts any of them; the client
    /// got a `no_application_protocol` alert (RFC 7301), not a relay to a
    /// backend that would not understand it.
    AlpnMismatch,
    /// Terminate: the TLS handshake with the backend failed (certificate
    /// not the pinned one, bad chain, no common protocol, timeout).
    UpstreamTlsError,
    /// The client reset or failed while relaying.
    ClientError,
    /// The backend reset or failed while relaying.
    UpstreamError,
    /// A PROXY protocol header from an untrusted source, or a missing or
    /// broken one from a trusted load balancer.
    ProxyHeaderRefused,
    /// The per-client limit on connections not yet routed was reached.
    ClientLimit,
    /// The per-client limit on connections in all was reached.
    ClientTotalLimit,
    /// The client opened new connections faster than its rate
    /// (`limits.client_new_connections_per_second`).
    ClientRateLimit,
    /// The route held its `max_connections`.
    RouteLimit,
    /// The route took new connections faster than its rate.
    RouteRateLimit,
    /// No byte either way for the idle timeout.
    Idle,
    /// The connection limit was reached at accept.
    Limit,
    /// The proxy ran out of file descriptors, memory or local ports for the
    /// upstream connect (its own shortage: the backend is not blamed).
    LocalResourceExhausted,
    /// The route had expired (at lookup, or while relaying).
    Expired,
    /// The route was removed or redeployed while the connection was open.
    RouteRemoved,
    /// The proxy shut down before the connection finished.
    Shutdown,
    /// Passthrough: the connection moved, sockets and bytes in flight, to
    /// the new process of an upgrade (`crate::upgrade`), which relays it on
    /// and counts its end there.
    HandedOff,
}

impl Outcome {
    /// Every outcome, for pre-registering metric label values.
    pub const ALL: [Outcome; 31] = [
        Outcome::Ok,
        Outcome::UnknownSni,
        Outcome::NoSni,
        Outcome::NotTls,
        Outcome::BadHello,
        Outcome::ClientClosed,
        Outcome::HelloTimeout,
        Outcome::ClientTlsError,
        Outcome::UpstreamRefused,
        Outcome::UpstreamTimeout,
        Outcome::DnsError,
        Outcome::DnsUnavailable,
        Outcome::BackendAddressRefused,
        Outcome::UpstreamConnectError,
        Outcome::AlpnMismatch,
        Outcome::UpstreamTlsError,
        Outcome::ClientError,
        Outcome::UpstreamError,
        Outcome::ProxyHeaderRefused,
        Outcome::ClientLimit,
        Outcome::ClientTotalLimit,
        Outcome::ClientRateLimit,
        Outcome::RouteLimit,
        Outcome::RouteRateLimit,
        Outcome::Idle,
        Outcome::Limit,
        Outcome::LocalResourceExhausted,
        Outcome::Expired,
        Outcome::RouteRemoved,
        Outcome::Shutdown,
        Outcome::HandedOff,
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
            Outcome::UpstreamRefused => "upstream_refused",
            Outcome::UpstreamTimeout => "upstream_timeout",
            Outcome::DnsError => "dns_error",
            Outcome::DnsUnavailable => "dns_unavailable",
            Outcome::BackendAddressRefused => "backend_address_refused",
            Outcome::UpstreamConnectError => "upstream_connect_error",
            Outcome::AlpnMismatch => "alpn_mismatch",
            Outcome::UpstreamTlsError => "upstream_tls_error",
            Outcome::ClientError => "client_error",
            Outcome::UpstreamError => "upstream_error",
            Outcome::ProxyHeaderRefused => "proxy_header_refused",
            Outcome::ClientLimit => "client_limit",
            Outcome::ClientTotalLimit => "client_total_limit",
            Outcome::ClientRateLimit => "client_rate_limit",
            Outcome::RouteLimit => "route_limit",
            Outcome::RouteRateLimit => "route_rate_limit",
            Outcome::Idle => "idle_timeout",
            Outcome::Limit => "limit",
            Outcome::LocalResourceExhausted => "local_resource_exhausted",
            Outcome::Expired => "expired",
            Outcome::RouteRemoved => "route_removed",
            Outcome::Shutdown => "shutdown",
            Outcome::HandedOff => "handed_off",
        }
    }
}

/// The outcome of a relay that ran, from how it ended and why a stop came.
pub fn after_relay(end: &super::relay::RelayEnd, killed: bool, expired: bool) -> Outcome {
    use super::relay::RelayEnd;
    match end {
        RelayEnd::Closed => Outcome::Ok,
        RelayEnd::Idle => Outcome::Idle,
        RelayEnd::Stopped if killed => Outcome::Shutdown,
        RelayEnd::Stopped if expired => Outcome::Expired,
        RelayEnd::Stopped => Outcome::RouteRemoved,
        RelayEnd::Paused(_) => Outcome::HandedOff,
        RelayEnd::ClientError(_) => Outcome::ClientError,
        RelayEnd::UpstreamError(_) => Outcome::UpstreamError,
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
