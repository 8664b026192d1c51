//! Passive health: a backend address whose connect just failed is skipped
//! for a short cool-down, so that while one enclave node is down every new
//! connection does not pay its connect timeout before failing over.
//! Addresses in cool-down are still tried last, so a route whose backends
//! are all down keeps probing them and recovers on the first success.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

#[derive(Debug)]
pub struct Health {
    /// Until when each failing address is skipped.
    down: DashMap<SocketAddr, Instant>,
    /// Entries in `down`, so the common all-healthy case is one atomic load.
    count: AtomicUsize,
    cooldown: Duration,
}

impl Health {
    /// `cooldown` zero disables passive health.
    pub fn new(cooldown: Duration) -> Self {
        Self {
            down: DashMap::new(),
            count: AtomicUsize::new(0),
            cooldown,
        }
    }

    /// Whether `addr` failed recently and should be tried last.
    pub fn is_cooling(&self, addr: SocketAddr) -> bool {
        if self.count.load(Ordering::Relaxed) == 0 {
            return false;
        }
        match self.down.get(&addr).map(|until| *until) {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                self.succeeded(addr);
                false
            }
            None => false,
        }
    }

    pub fn failed(&self, addr: SocketAddr) {
        if self.cooldown.is_zero() {
            return;
        }
        if self
            .down
            .insert(addr, Instant::now() + self.cooldown)
            .is_none()
        {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn succeeded(&self, addr: SocketAddr) {
        if self.count.load(Ordering::Relaxed) > 0 && self.down.remove(&addr).is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Addresses in cool-down now (for tests and the admin view).
    pub fn cooling(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn cools_down_then_recovers() {
        let h = Health::new(Duration::from_secs(10));
        let a: SocketAddr = "10.0.0.1:443".parse().unwrap();
        assert!(!h.is_cooling(a));
        h.failed(a);
        h.failed(a);
        assert!(h.is_cooling(a));
        assert_eq!(h.cooling(), 1);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!h.is_cooling(a));
        assert_eq!(h.cooling(), 0);
        h.failed(a);
        h.succeeded(a);
        assert!(!h.is_cooling(a));
    }

    #[test]
    fn zero_cooldown_disables() {
        let h = Health::new(Duration::ZERO);
        let a: SocketAddr = "10.0.0.1:443".parse().unwrap();
        h.failed(a);
        assert!(!h.is_cooling(a));
    }
}
