//! Per-client-IP limit on connections that have not yet sent a whole
//! ClientHello: one address opening thousands of slow connections cannot
//! take every slot, while the global limit still bounds the total.

use std::net::IpAddr;

use dashmap::DashMap;

#[derive(Debug)]
pub struct PerIpLimit {
    max: usize,
    held: DashMap<IpAddr, usize>,
}

/// One slot for an IP; released on drop.
#[derive(Debug)]
pub struct IpSlot<'a> {
    limit: &'a PerIpLimit,
    ip: IpAddr,
}

impl PerIpLimit {
    /// `max` zero: no limit.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            held: DashMap::new(),
        }
    }

    /// A slot for `ip`, or `None` if it already holds `max`. Without a limit
    /// this takes no lock and returns a slot that does nothing on drop.
    pub fn try_acquire(&self, ip: IpAddr) -> Option<Option<IpSlot<'_>>> {
        if self.max == 0 {
            return Some(None);
        }
        let mut n = self.held.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Some(IpSlot { limit: self, ip }))
    }

    /// Addresses holding slots now.
    pub fn addresses(&self) -> usize {
        self.held.len()
    }
}

impl Drop for IpSlot<'_> {
    fn drop(&mut self) {
        // Remove the entry at zero so the map only holds active addresses.
        self.limit.held.remove_if_mut(&self.ip, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_ip_and_released() {
        let l = PerIpLimit::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = l.try_acquire(a).unwrap();
        let s2 = l.try_acquire(a).unwrap();
        assert!(l.try_acquire(a).is_none());
        let s3 = l.try_acquire(b).unwrap();
        drop(s1);
        let s4 = l.try_acquire(a).unwrap();
        drop((s2, s3, s4));
        assert_eq!(l.addresses(), 0);
    }

    #[test]
    fn no_limit_is_free() {
        let l = PerIpLimit::new(0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..10 {
            assert!(matches!(l.try_acquire(a), Some(None)));
        }
        assert_eq!(l.addresses(), 0);
    }
}
