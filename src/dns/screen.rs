//! Which resolved backend addresses may be connected to. Whoever controls
//! a backend name's DNS (a tenant's own zone, a hijacked record) could
//! otherwise point public traffic at the proxy host's own services:
//! loopback, the cloud metadata endpoint on link-local, or the admin API.
//! An address the operator wrote as an IP literal never comes through here:
//! that is the operator's choice.
//!
//! Pure: no I/O except [`Screen::owns`], which asks the kernel whether an
//! address is this host's (a bind, never a packet).

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// Why a resolved address is refused: the `reason` label of
/// `mse_proxy_backend_addresses_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// 127.0.0.0/8, ::1: this host's own services.
    Loopback,
    /// 169.254.0.0/16 (the cloud metadata endpoint), fe80::/10.
    LinkLocal,
    /// 0.0.0.0/8, ::: connecting to it reaches this host.
    Unspecified,
    /// 224.0.0.0/4, ff00::/8: never a TCP peer.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// The admin listener's address: the routes and tokens API must never
    /// be reachable as somebody's backend.
    Admin,
}

impl Refusal {
    /// Every reason, for pre-registering metric label values.
    pub const ALL: [Refusal; 6] = [
        Refusal::Loopback,
        Refusal::LinkLocal,
        Refusal::Unspecified,
        Refusal::Multicast,
        Refusal::Broadcast,
        Refusal::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Loopback => "loopback",
            Refusal::LinkLocal => "link_local",
            Refusal::Unspecified => "unspecified",
            Refusal::Multicast => "multicast",
            Refusal::Broadcast => "broadcast",
            Refusal::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of `ip` that a resolved backend may not have unless
/// allow-listed; `None` for an ordinary unicast address (private ranges
/// included: enclaves live there). An IPv4-mapped IPv6 address is judged
/// as the IPv4 address it carries, so `::ffff:127.0.0.1` is loopback.
pub fn internal_class(ip: IpAddr) -> Option<Refusal> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            if v4.is_loopback() {
                Some(Refusal::Loopback)
            } else if v4.is_link_local() {
                Some(Refusal::LinkLocal)
            } else if v4.octets()[0] == 0 {
                // 0.0.0.0/8, "this network": Linux connects 0.0.0.0 to itself.
                Some(Refusal::Unspecified)
            } else if v4.is_multicast() {
                Some(Refusal::Multicast)
            } else if v4.is_broadcast() {
                Some(Refusal::Broadcast)
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_loopback() {
                Some(Refusal::Loopback)
            } else if v6.is_unicast_link_local() {
                Some(Refusal::LinkLocal)
            } else if v6.is_unspecified() {
                Some(Refusal::Unspecified)
            } else if v6.is_multicast() {
                Some(Refusal::Multicast)
            } else {
                None
            }
        }
    }
}

/// Whether any network of `allow` holds `ip` (judged canonical, as in
/// [`internal_class`]).
pub fn allowed(allow: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    allow.iter().any(|n| n.contains(&ip))
}

/// The config-wide part of the screen: `dns.allow_internal` and the admin
/// listener's address.
#[derive(Debug, Clone, Default)]
pub struct Screen {
    /// `dns.allow_internal`: internal networks every route may reach by name.
    pub allow: Vec<IpNet>,
    /// The admin listener's bound address, if any: set once it is bound
    /// (its port may be 0 in the config), before connections are served.
    pub admin: std::sync::OnceLock<SocketAddr>,
}

impl Screen {
    /// Why `addr` (a resolved backend address) is refused for a route that
    /// allow-lists `route_allow`, or `Ok`. The admin listener is refused
    /// whatever the allow-lists say: they name networks, not ports, and
    /// allowing a loopback sidecar must not open the admin API with it (an
    /// operator who means it writes the IP literal).
    pub fn check(&self, addr: SocketAddr, route_allow: &[IpNet]) -> Result<(), Refusal> {
        if self.is_admin(addr) {
            return Err(Refusal::Admin);
        }
        match internal_class(addr.ip()) {
            Some(_) if allowed(route_allow, addr.ip()) || allowed(&self.allow, addr.ip()) => Ok(()),
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    /// `addr` reaches the admin listener: its exact address, or, when it
    /// listens on every address (`0.0.0.0`, `::`), its port on any address
    /// of this host.
    fn is_admin(&self, addr: SocketAddr) -> bool {
        let Some(&admin) = self.admin.get() else {
            return false;
        };
        if addr.port() != admin.port() {
            return false;
        }
        let ip = addr.ip().to_canonical();
        if ip == admin.ip().to_canonical() {
            return true;
        }
        admin.ip().is_unspecified() && (internal_class(ip).is_some() || Self::owns(ip))
    }

    /// Whether `ip` is one of this host's addresses: only those can be bound.
    /// A kernel allowing non-local binds (`ip_nonlocal_bind`) answers yes for
    /// more, which refuses more, never less.
    fn owns(ip: IpAddr) -> bool {
        std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_classified() {
        for (a, want) in [
            ("127.0.0.1", Some(Refusal::Loopback)),
            ("127.255.0.9", Some(Refusal::Loopback)),
            ("::1", Some(Refusal::Loopback)),
            ("::ffff:127.0.0.1", Some(Refusal::Loopback)),
            ("169.254.169.254", Some(Refusal::LinkLocal)),
            ("fe80::1", Some(Refusal::LinkLocal)),
            ("0.0.0.0", Some(Refusal::Unspecified)),
            ("0.1.2.3", Some(Refusal::Unspecified)),
            ("::", Some(Refusal::Unspecified)),
            ("224.0.0.1", Some(Refusal::Multicast)),
            ("ff02::1", Some(Refusal::Multicast)),
            ("255.255.255.255", Some(Refusal::Broadcast)),
            ("10.0.0.5", None),
            ("192.168.1.1", None),
            ("203.0.113.7", None),
            ("2001:db8::1", None),
            ("::ffff:10.0.0.5", None),
        ] {
            assert_eq!(internal_class(ip(a)), want, "{a}");
        }
    }

    #[test]
    fn allow_lists_match_networks_and_mapped_addresses() {
        let allow: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap(), "fe80::/10".parse().unwrap()];
        assert!(allowed(&allow, ip("127.0.0.2")));
        assert!(allowed(&allow, ip("::ffff:127.0.0.1")));
        assert!(allowed(&allow, ip("fe80::9")));
        assert!(!allowed(&allow, ip("169.254.169.254")));
        assert!(!allowed(&[], ip("127.0.0.1")));
    }

    #[test]
    fn the_screen_refuses_internal_unless_allowed_and_the_admin_always() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        let screen = Screen {
            allow: vec!["169.254.0.0/16".parse().unwrap()],
            admin: sa("127.0.0.1:9090").into(),
        };
        let route: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        assert_eq!(
            screen.check(sa("127.0.0.1:443"), &[]),
            Err(Refusal::Loopback)
        );
        assert_eq!(screen.check(sa("127.0.0.1:443"), &route), Ok(()));
        assert_eq!(screen.check(sa("169.254.1.1:443"), &[]), Ok(()));
        assert_eq!(screen.check(sa("10.1.2.3:443"), &[]), Ok(()));
        assert_eq!(
            screen.check(sa("127.0.0.1:9090"), &route),
            Err(Refusal::Admin)
        );
        assert_eq!(
            screen.check(sa("[::ffff:127.0.0.1]:9090"), &route),
            Err(Refusal::Admin)
        );
        // Another loopback address on the admin port is another socket.
        assert_eq!(screen.check(sa("127.0.0.2:9090"), &route), Ok(()));
    }

    #[test]
    fn an_admin_on_every_address_is_refused_on_this_hosts_addresses() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        let screen = Screen {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            admin: SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 9090).into(),
        };
        assert_eq!(screen.check(sa("127.0.0.5:9090"), &[]), Err(Refusal::Admin));
        assert_eq!(screen.check(sa("127.0.0.5:9091"), &[]), Ok(()));
        // TEST-NET-3 is nobody's address here: the admin port is fine there.
        assert_eq!(screen.check(sa("203.0.113.7:9090"), &[]), Ok(()));
    }
}
