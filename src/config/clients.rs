//! Per-client limits (`[limits]`): what one client may hold. A client is
//! an address aggregated to a prefix (IPv4 /32 and IPv6 /64 by default):
//! one IPv6 host is given a whole /64 and can pick any address in it, so
//! counting exact IPv6 addresses would limit nothing. An IPv4 address
//! written as IPv6 (`::ffff:a.b.c.d`, from a dual-stack listener) counts as
//! the IPv4 address.

use std::net::IpAddr;
use std::path::Path;

use super::rate::Rate;
use super::raw::RawLimits;
use super::ConfigErrors;

/// The per-client limits, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// `limits.max_unrouted_per_client`: connections whose hello is not
    /// read yet (0: off).
    pub unrouted: usize,
    /// `limits.max_connections_per_client`: connections in all (0: off).
    pub connections: usize,
    /// `limits.client_new_connections_per_second` and `_burst`: how fast
    /// one client may open connections (`None`: no limit). The caps above
    /// count connections held; a client that connects and closes in a loop
    /// holds few and costs a handshake each, which only a rate catches.
    pub rate: Option<Rate>,
    pub prefixes: ClientPrefixes,
}

/// An unset client burst is this many seconds of its rate (500 by
/// default): a whole office opening pages at once, or a browser restoring
/// dozens of tabs, passes at full speed.
pub const BURST_SECONDS: u32 = 5;

impl ClientLimits {
    pub fn validate(path: &Path, raw: &RawLimits, errs: &mut ConfigErrors) -> ClientLimits {
        let prefixes = ClientPrefixes {
            ipv4: raw.client_ipv4_prefix,
            ipv6: raw.client_ipv6_prefix,
        };
        if !(8..=32).contains(&prefixes.ipv4) {
            errs.push(path, "limits.client_ipv4_prefix", "must be from 8 to 32");
        }
        if !(16..=128).contains(&prefixes.ipv6) {
            errs.push(path, "limits.client_ipv6_prefix", "must be from 16 to 128");
        }
        for (field, value) in [
            (
                "limits.max_unrouted_per_client",
                raw.max_unrouted_per_client,
            ),
            (
                "limits.max_connections_per_client",
                raw.max_connections_per_client,
            ),
        ] {
            if value > super::bounds::MAX_CONNECTIONS {
                errs.push(
                    path,
                    field,
                    format!(
                        "{value} is more than the most allowed, {} (0: no limit)",
                        super::bounds::MAX_CONNECTIONS
                    ),
                );
            }
        }
        let rate = super::rate::validate(
            path,
            (
                "limits.client_new_connections_per_second",
                "limits.client_new_connections_burst",
            ),
            raw.client_new_connections_per_second,
            raw.client_new_connections_burst,
            |r| r.saturating_mul(BURST_SECONDS),
            errs,
        );
        ClientLimits {
            unrouted: raw.max_unrouted_per_client,
            connections: raw.max_connections_per_client,
            rate,
            prefixes,
        }
    }
}

/// How client addresses are grouped into clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientPrefixes {
    pub ipv4: u8,
    pub ipv6: u8,
}

impl Default for ClientPrefixes {
    fn default() -> Self {
        Self { ipv4: 32, ipv6: 64 }
    }
}

impl ClientPrefixes {
    /// The client `ip` belongs to: its network under the prefix.
    pub fn client(self, ip: IpAddr) -> IpAddr {
        // IPv4 written as IPv6 (a dual-stack listener) is the IPv4 client.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let prefix = match ip {
            IpAddr::V4(_) => self.ipv4.min(32),
            IpAddr::V6(_) => self.ipv6.min(128),
        };
        // The lengths are bounded above, so `new` cannot fail.
        ipnet::IpNet::new(ip, prefix).map_or(ip, |net| net.trunc().addr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_group_addresses() {
        let p = ClientPrefixes { ipv4: 24, ipv6: 48 };
        assert_eq!(p.client(ip("198.51.100.77")), ip("198.51.100.0"));
        assert_eq!(p.client(ip("2001:db8:aa:bb::1")), ip("2001:db8:aa::"));
        let exact = ClientPrefixes {
            ipv4: 32,
            ipv6: 128,
        };
        assert_eq!(exact.client(ip("::1")), ip("::1"));
        assert_eq!(ClientPrefixes::default().client(ip("::1")), ip("::"));
    }
}
