//! Per-client limits: how many connections one client may hold before its
//! hello is read, and in all. One address opening thousands of slow
//! connections, or thousands of routed ones it then leaves idle, cannot
//! take every slot of the global limit from everyone else.
//!
//! A client is an address aggregated to a prefix ([`ClientPrefixes`]).

use std::net::IpAddr;

use dashmap::DashMap;

pub use crate::config::clients::ClientPrefixes;

/// Connections held per client, under a cap.
#[derive(Debug)]
pub struct PerClientLimit {
    max: usize,
    prefixes: ClientPrefixes,
    held: DashMap<IpAddr, usize>,
}

/// One slot of a client's; released on drop.
#[derive(Debug)]
pub struct ClientSlot<'a> {
    limit: &'a PerClientLimit,
    client: IpAddr,
}

impl PerClientLimit {
    /// `max` zero: no limit.
    pub fn new(max: usize, prefixes: ClientPrefixes) -> Self {
        Self {
            max,
            prefixes,
            held: DashMap::new(),
        }
    }

    /// A slot for the client of `ip`, or `None` if it already holds `max`.
    /// Without a limit this takes no lock and returns a slot that does
    /// nothing on drop.
    pub fn try_acquire(&self, ip: IpAddr) -> Option<Option<ClientSlot<'_>>> {
        if self.max == 0 {
            return Some(None);
        }
        let client = self.prefixes.client(ip);
        let mut n = self.held.entry(client).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Some(ClientSlot {
            limit: self,
            client,
        }))
    }

    /// Clients holding slots now.
    pub fn clients(&self) -> usize {
        self.held.len()
    }
}

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        // Remove the entry at zero so the map only holds active clients.
        self.limit.held.remove_if_mut(&self.client, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn slots_are_counted_per_client_and_released() {
        let l = PerClientLimit::new(2, ClientPrefixes::default());
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let s1 = l.try_acquire(a).unwrap();
        let s2 = l.try_acquire(a).unwrap();
        assert!(l.try_acquire(a).is_none());
        let s3 = l.try_acquire(b).unwrap();
        drop(s1);
        let s4 = l.try_acquire(a).unwrap();
        drop((s2, s3, s4));
        assert_eq!(l.clients(), 0);
    }

    #[test]
    fn an_ipv6_slash_64_is_one_client_and_mapped_ipv4_is_ipv4() {
        let l = PerClientLimit::new(2, ClientPrefixes::default());
        let _s1 = l.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        let _s2 = l
            .try_acquire(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
            .unwrap();
        assert!(l.try_acquire(ip("2001:db8:1:2:abcd::9")).is_none());
        assert!(l.try_acquire(ip("2001:db8:1:3::1")).unwrap().is_some());
        let _v4 = l.try_acquire(ip("192.0.2.7")).unwrap();
        let _m = l.try_acquire(ip("::ffff:192.0.2.7")).unwrap();
        assert!(l.try_acquire(ip("192.0.2.7")).is_none());
    }

    #[test]
    fn no_limit_is_free() {
        let l = PerClientLimit::new(0, ClientPrefixes::default());
        for _ in 0..10 {
            assert!(matches!(l.try_acquire(ip("192.0.2.1")), Some(None)));
        }
        assert_eq!(l.clients(), 0);
    }
}
